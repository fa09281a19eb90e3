"""The package's layers hold: the import-linter contracts in pyproject.toml ([tool.importlinter]:
core < config < store < models, engines < preflight < features < pipeline < commands < cli; the config
imports nothing of ours but core; no verb but `run` imports the loop; the verbs import no other verb).
A broken contract fails with import-linter's report, naming each offending import."""
from __future__ import annotations

from importlinter import configuration
from importlinter.application.use_cases import lint_imports

from tests.conftest import REPO


def test_the_import_contracts_are_kept(capsys):
    configuration.configure()  # import-linter's readers and graph builder, as its CLI sets them up
    kept = lint_imports(config_filename=str(REPO / "pyproject.toml"), cache_dir=None, no_logo=True)
    report = capsys.readouterr().out
    assert kept, report
    assert "0 broken" in report, report


def test_no_module_imports_itself_through_others():
    """No import circle between our modules, counted as docs/house.md's measure counts them:
    every import statement, deferred ones too; `from a import b` is an edge to a and to a.b
    where that is a module; a circle made only of a package's __init__ and one of its own
    submodules (a re-export) does not count."""
    import ast

    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (REPO / "selflengthen").rglob("*.py")}

    def ours(target: str) -> str | None:  # the module of ours a dotted name falls in
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            edges[name] |= {t for t in map(ours, targets) if t and t != name}

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reached = {m: reach(m) for m in modules}
    circles = {frozenset(o for o in reached[m] if m in reached[o]) for m in modules}
    circles = [c for c in circles if len(c) > 1]

    def reexport(circle) -> bool:
        inits = [m for m in circle if modules[m].name == "__init__.py"]
        rest = [m for m in circle if m not in inits]
        return bool(inits) and len(rest) <= 1 and all(any(r.startswith(i + ".") for i in inits) for r in rest)

    real = sorted(sorted(c) for c in circles if not reexport(c))
    assert not real, f"import circle among: {', '.join(real[0])}"
