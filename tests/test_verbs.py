"""The verb table (config/verbs.py) drives the command line: the usage text, dispatch (a
Hydra verb gets its composed config, any other verb its arguments), the output folder
check, the unknown-command line, and schema.VERBS; a made-up verb added as one row is
dispatched. (Each real verb runs through the real CLI in its own test file.)"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from selflengthen import cli
from selflengthen.config import schema, verbs
from tests.conftest import REPO

CALLS: list = []


def made_up_plain(argv: list[str]) -> None:
    CALLS.append(("plain", argv))
    print("made-up verb ran")


def made_up_job(cfg) -> None:
    CALLS.append(("hydra", cfg.benchmark, cfg.out_dir))


@pytest.fixture
def calls():
    CALLS.clear()
    yield CALLS
    GlobalHydra.instance().clear()  # an in-process Hydra job leaves its global state behind


def with_row(monkeypatch, row: verbs.Verb) -> None:
    monkeypatch.setattr(verbs, "VERBS", (*verbs.VERBS, row))


def test_the_usage_text_is_the_rows_in_order(capsys):
    cli.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m selflengthen run [KEY=VALUE ...] [-m]")
    starts = [text.index(f"python -m selflengthen {v.usage[0]}") for v in verbs.VERBS]
    assert starts == sorted(starts)
    for verb in verbs.VERBS:
        for line in verb.usage[1:]:
            assert "\n" + " " * cli.USAGE_INDENT + line + "\n" in text
    assert text.rstrip().endswith("the config and its groups")


def test_every_row_names_a_module_with_its_entry_a_conf_file_and_a_typed_root():
    for verb in verbs.VERBS:
        spec = importlib.util.find_spec(verb.module)  # read, not imported: no Ray or vLLM here
        assert spec is not None and verb.module.startswith("selflengthen.commands."), verb
        tree = ast.parse(Path(spec.origin).read_text())
        assert verb.entry in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, verb
        if verb.config:
            assert (REPO / "conf" / f"{verb.config}.yaml").is_file(), verb
        assert not verb.hydra or verb.config, verb  # a Hydra job composes its conf file
    assert list(schema.VERBS) == [v.name for v in verbs.VERBS if v.settings]
    for verb in verbs.VERBS:
        if verb.settings:
            assert schema.VERBS[verb.name] is getattr(schema, verb.settings)
            assert issubclass(schema.VERBS[verb.name], schema.Config)


def test_an_unknown_verb_lists_the_rows(monkeypatch, capsys, calls):
    with_row(monkeypatch, verbs.Verb("made-up", ("made-up ARG",), __name__, entry="made_up_plain", hydra=False))
    with pytest.raises(SystemExit) as stop:
        cli.main(["nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("selflengthen: error: unknown command 'nope'; use one of run, eval, dpo, rl, finalize, agentwrite, "
                   "inspect, estimate, made-up (python -m selflengthen --help)")
    assert not calls


def test_a_made_up_plain_verb_is_one_row(monkeypatch, capsys, calls):
    with_row(monkeypatch, verbs.Verb("made-up", ("made-up ARG   does nothing",), __name__, entry="made_up_plain",
                                     hydra=False, help="usage: made-up ARG"))
    cli.main(["made-up", "a", "b=1"])
    assert calls == [("plain", ["a", "b=1"])] and "made-up verb ran" in capsys.readouterr().out
    cli.main(["--help"])
    assert "python -m selflengthen made-up ARG   does nothing" in capsys.readouterr().out
    cli.main(["made-up", "--help"])  # its own help, without running it
    assert capsys.readouterr().out.strip() == "usage: made-up ARG" and len(calls) == 1


def test_a_made_up_hydra_verb_gets_its_composed_config_and_its_output_folder_checked(
        monkeypatch, tmp_path, capsys, calls):
    with_row(monkeypatch, verbs.Verb("made-up", ("made-up",), __name__, entry="made_up_job", config="eval",
                                     output_key="out_dir"))
    monkeypatch.setattr("sys.argv", ["selflengthen"])
    cli.main(["made-up", "benchmark=heldout_tiny", f"out_dir={tmp_path / 'out'}"])
    assert calls == [("hydra", "heldout_tiny", str(tmp_path / "out"))]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as stop:  # the row's output key names the fix
        cli.main(["made-up", "benchmark=heldout_tiny", f"out_dir={tmp_path / 'file' / 'out'}"])
    assert stop.value.code == 2 and len(calls) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot create the output folder" in err and err.endswith("set out_dir= to a folder you can write")
