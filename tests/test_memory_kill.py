"""A worker Ray's memory monitor killed (an engine replica or a trainer on a crowded machine)
is one line naming the memory and the settings to lower, and what is kept, exit 2: not a
traceback of the event loop (seen when an evaluation shared 24 GiB with two GRPO trainers)."""
import pytest
import ray.exceptions

from selflengthen.cli import user_errors
from selflengthen.core.errors import memory_kill

RAY_TEXT = ("1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, "
            "ID: 0787) was 22.51GB used / 23.54GB limit (0.956239)")


def test_a_memory_kill_is_one_line_with_what_is_kept(capsys):
    with pytest.raises(SystemExit) as stop, user_errors(False, "finished items are kept"):
        try:
            raise ray.exceptions.OutOfMemoryError(RAY_TEXT)
        except ray.exceptions.OutOfMemoryError as oom:
            raise RuntimeError("the engine replica failed") from oom  # as it reaches the command, wrapped
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "22.51GB used of 23.54GB" in err[0] and "engine.cpu_memory_utilization" in err[0]
    assert err[0].endswith("finished items are kept, run the same command to resume")


def test_other_errors_are_not_taken_for_memory_kills():
    assert memory_kill(RuntimeError("was 1GB used / 2GB limit")) is None
    assert memory_kill(ValueError()) is None
    with pytest.raises(KeyError), user_errors(False, "kept"):
        raise KeyError("a bug keeps its traceback")
