"""One writer per run folder.

`RunLock(run_root)` takes an exclusive, non-blocking flock(2) on `run_root/.lock`. The
lock belongs to the open file, so the kernel drops it when the holder exits in any way,
SIGKILL and crashes included: it cannot go stale. The holder then writes who it is
(pid, host, start time, command line) to `run_root/.lock.json`, so that a second process
is refused at once with a message naming it. Separate run folders lock independently.

fcntl is used directly rather than the `filelock` package: across the versions that
torch/vLLM allow, filelock either reports every flock error as contention (so a
filesystem without locking would read "in use") or falls back to a SoftFileLock that a
killed holder leaves behind. Here contention (EWOULDBLOCK) and "locking does not work on
this filesystem" (any other OSError) are told apart.

The descriptor is not inherited across exec (PEP 446), so engine and trainer processes
that the holder starts do not keep the lock alive after it dies. The `.lock` file itself
is never deleted: unlinking a lock file while others wait on it breaks mutual exclusion.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from selflengthen.core import stopping
from selflengthen.core.errors import UserError

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"


def read_holder(run_root: Path) -> dict | None:
    """The holder's info as written by RunLock, or None when missing or garbled."""
    try:
        info = json.loads((Path(run_root) / HOLDER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _live_holder(run_root: Path) -> dict | None:
    """The holder's info, giving a holder that has just taken the lock a moment to write
    it; info left by a holder that died on this host (its pid is gone) does not count."""
    for _ in range(5):
        info = read_holder(run_root)
        if info and (info.get("host") != socket.gethostname() or _pid_alive(info["pid"])):
            return info
        time.sleep(0.05)
    return None


class RunLock:
    """Exclusive lock on a run folder; `with RunLock(root):` or acquire()/release()."""

    def __init__(self, run_root: Path):
        self.run_root = Path(run_root)
        self.lock_path = self.run_root / LOCK_NAME
        self.holder_path = self.run_root / HOLDER_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        assert self._fd is None, "RunLock is not reentrant"
        try:
            self.run_root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.lock_path}: {e.strerror}; "
                            "check that the run folder is writable, or set paths.iterations_dir") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(self._in_use_message()) from None
            raise UserError(f"run folder {self.run_root} is on a filesystem where file locking is not "
                            f"supported ({e.strerror}); put paths.iterations_dir on a local disk") from e
        self._fd = fd
        try:
            self._write_holder()
        except BaseException:
            self.release()
            raise
        stopping.on_forced_exit(self.release)  # a stop that must exit without unwinding still drops the holder file
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        stopping.off_forced_exit(self.release)
        try:
            self.holder_path.unlink(missing_ok=True)  # while still held: nobody reads a stale holder
        finally:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _write_holder(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": shlex.join(sys.orig_argv)}
        tmp = self.holder_path.with_name(f"{HOLDER_NAME}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.holder_path)

    def _in_use_message(self) -> str:
        info = _live_holder(self.run_root)
        who = (f"pid {info['pid']} on host {info.get('host', '?')} since {info.get('started', '?')} "
               f"({info.get('command', '?')})" if info else "another process")
        return (f"run folder {self.run_root} is in use by {who}; wait for it to finish, stop it, "
                f"or use run.name=OTHER")
