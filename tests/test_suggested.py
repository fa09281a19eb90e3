"""Every shell command our messages tell a user to run exists, with that subcommand, in the
environment the project installs: `<command> --help` succeeds for each entry of
selflengthen.core.suggested (run from the venv's own bin folder, as a user of it would)."""
import sys
from pathlib import Path

import pytest

from selflengthen.core import suggested
from tests.conftest import REPO, run_watched


@pytest.mark.parametrize("name", sorted(suggested.ALL))
def test_suggested_command_exists_in_the_installed_versions(name):
    words = suggested.ALL[name].split()
    program = Path(sys.executable).parent / words[0]
    assert program.exists(), f"{suggested.ALL[name]!r}: {words[0]} is not installed beside {sys.executable}"
    done = run_watched([str(program), *words[1:], "--help"], cwd=REPO)
    assert done.returncode == 0, f"{suggested.ALL[name]} --help failed: {done.stderr[-500:]}"


def test_the_hub_hint_names_the_installed_cli(monkeypatch):
    from selflengthen.models import model_check

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems, _ = model_check.hub_problems("nobody/no-such-model-xyz")  # offline here: not cached
    assert problems and f"{suggested.HF_DOWNLOAD} nobody/no-such-model-xyz" in problems[0]
