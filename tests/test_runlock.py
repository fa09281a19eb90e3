"""One writer per run folder: a second holder is refused at once, naming the first; the
OS drops the lock of a killed holder; separate folders lock independently."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from selflengthen.core.errors import UserError
from selflengthen.store import runlock
from selflengthen.store.runlock import RunLock, read_holder

HOLDER = textwrap.dedent("""
    import sys, time
    from selflengthen.store.runlock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_writes_holder_info_and_removes_it_on_release(tmp_path):
    root = tmp_path / "run"
    with RunLock(root) as lock:
        assert lock.held and (root / ".lock").is_file()
        info = json.loads((root / ".lock.json").read_text())
        assert info["pid"] == os.getpid() and info["host"] and "T" in info["started"] and info["command"]
        assert not list(root.glob("*.tmp"))
    assert not lock.held and not (root / ".lock.json").exists()
    assert (root / ".lock").exists()  # never unlinked: waiters would split across inodes
    with RunLock(root):  # free again
        pass


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path, monkeypatch):
    with RunLock(tmp_path):
        # at once, no waiting: the contender asks for the lock without blocking (a blocking
        # flock here would never return) and sleeps nowhere (the first holder's info is there)
        real_flock, ops, naps = runlock.fcntl.flock, [], []

        def flock(fd, op):
            ops.append(op)
            assert op & runlock.fcntl.LOCK_NB, "a blocking flock: the second holder would wait"
            return real_flock(fd, op)

        monkeypatch.setattr(runlock.fcntl, "flock", flock)
        monkeypatch.setattr(runlock.time, "sleep", naps.append)
        with pytest.raises(UserError) as err:
            RunLock(tmp_path).acquire()
        monkeypatch.undo()
        assert ops and naps == []
    message = str(err.value)
    assert f"run folder {tmp_path} is in use by pid {os.getpid()} on host " in message
    assert "since " in message and "run.name=OTHER" in message and "\n" not in message


def test_garbled_or_missing_holder_info_says_another_process(tmp_path):
    with RunLock(tmp_path):
        (tmp_path / ".lock.json").write_text("{not json")
        with pytest.raises(UserError, match="in use by another process; wait"):
            RunLock(tmp_path).acquire()
        (tmp_path / ".lock.json").unlink()
        with pytest.raises(UserError, match="in use by another process"):
            RunLock(tmp_path).acquire()
    assert read_holder(tmp_path) is None


def test_separate_run_folders_lock_independently(tmp_path):
    with RunLock(tmp_path / "a"), RunLock(tmp_path / "b") as b:
        assert b.held


def test_a_killed_holder_releases_the_lock(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"in use by pid {proc.pid} on host .*-c"):
            RunLock(tmp_path).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert read_holder(tmp_path)["pid"] == proc.pid  # the killed holder's info stays behind ...
        with RunLock(tmp_path):                            # ... but not its lock
            assert read_holder(tmp_path)["pid"] == os.getpid()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_info_of_a_dead_holder_is_not_named(tmp_path, monkeypatch):
    """A contender that reads the info between a new holder's flock and its write of the
    info must not name the previous, dead holder."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with RunLock(tmp_path):
        info = read_holder(tmp_path) | {"pid": int(dead.stdout)}
        (tmp_path / ".lock.json").write_text(json.dumps(info))
        with pytest.raises(UserError, match="in use by another process"):
            RunLock(tmp_path).acquire()


def test_filesystem_without_locking_is_reported(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(runlock.fcntl, "flock", no_locks)
    with pytest.raises(UserError, match=f"run folder {tmp_path} is on a filesystem where file locking is not supported"):
        RunLock(tmp_path).acquire()
    monkeypatch.undo()
    with RunLock(tmp_path):  # no descriptor leaked, no lock left
        pass
