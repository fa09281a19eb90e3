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
