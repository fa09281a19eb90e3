"""The suite's subprocess watchdog (tests/conftest.py run_watched): a command that stops making
progress is killed and fails its test; one that keeps printing, or keeps a status.json beating,
runs to its end however long that takes, and gives back what subprocess.run would."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, run_watched

# each child runs past the quiet limit in all, with gaps 10x shorter than it between signs of life
QUIET_S = 5
PRINTS = "import time\nfor i in range(16):\n    print(i, flush=True); time.sleep(0.5)\nprint('done')"
BEATS = ("import sys, time, pathlib\np = pathlib.Path(sys.argv[1]) / 'run' / 'status.json'\n"
         "p.parent.mkdir()\nfor i in range(16):\n    p.write_text(str(i)); time.sleep(0.5)\nprint('done')")
SILENT = "import time\ntime.sleep(3600)\nprint('done')"


def test_a_command_that_keeps_printing_runs_to_its_end():
    proc = run_watched([sys.executable, "-c", PRINTS], cwd=REPO, quiet_s=QUIET_S)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "done" and proc.stderr == ""


def test_a_status_json_heartbeat_is_progress_too(tmp_path):
    proc = run_watched([sys.executable, "-c", BEATS, str(tmp_path)], cwd=REPO, watch=(tmp_path,), quiet_s=QUIET_S)
    assert proc.returncode == 0 and proc.stdout.strip() == "done"


def test_a_silent_command_is_killed_and_fails_the_test():
    with pytest.raises(pytest.fail.Exception, match="no new output and no status.json change for 5 s"):
        run_watched([sys.executable, "-c", SILENT], cwd=REPO, quiet_s=QUIET_S)


def test_the_cap_stops_a_command_that_never_ends():
    forever = "import time\nwhile True:\n    print('.', flush=True); time.sleep(0.2)"
    with pytest.raises(pytest.fail.Exception, match="still running after 3 s"):
        run_watched([sys.executable, "-c", forever], cwd=REPO, quiet_s=60, cap_s=3)


def test_the_exit_code_and_both_streams_come_back():
    proc = run_watched([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                       cwd=REPO)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
