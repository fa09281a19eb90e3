"""Nothing left behind when a command ends, however it ends (normally, by an error, Ctrl-C,
SIGTERM or `timeout`): no Ray worker, engine process or temporary folder of its own.

Before the command starts a local Ray instance it marks its environment with a token of
its own (SELFLENGTHEN_RAY_OWNER=<pid>-<random>); Ray's processes (GCS, raylet, workers) and
what they start (vLLM's engine processes, trainers) inherit it, wherever they move in the
process tree. At exit, after Ray's own shutdown, every process still carrying the token is
killed and awaited: a Ray worker that outlived its raylet (stuck in an engine's start, or
exiting through a half torn-down interpreter) would otherwise print "Failed to connect to
GCS within 60 seconds" or a TypeError a minute after the command's last line. The
command's scratch folder (core/scratch.py) goes last. A Ray cluster started by someone
else (`ray.address`) is never touched: the driver's own actors and tasks end with its
connection, as Ray ends the work of a driver that leaves.

While this runs, Ctrl-C or SIGTERM kills what is left at once and exits (128 + signal)."""
from __future__ import annotations

import atexit
import os
import signal
import time
import uuid
from pathlib import Path

from selflengthen.core import scratch, stopping

OWNER_ENV = "SELFLENGTHEN_RAY_OWNER"
WAIT_S = 10.0  # how long killed processes get to disappear (SIGKILL: normally at once)
_token: str | None = None


def mark_local_ray() -> None:
    """Mark this process's environment before it starts a local Ray instance, and release
    Ray and the marked processes at exit (registered before Ray's own atexit, so it runs
    after it)."""
    global _token
    if _token is None:
        _token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        atexit.register(release)
        stopping.on_forced_exit(lambda: kill_marked(_token, wait_s=5.0))  # the main thread is stuck in Ray
    os.environ[OWNER_ENV] = _token
    _workers_temp_in_scratch()


def _workers_temp_in_scratch() -> None:
    """Ray's processes get the scratch folder as their TMPDIR: what vLLM, torch.distributed,
    wandb and the trainers leave in a temporary folder (vllm_dist_<id>, wandb-media, ...)
    goes with it, also from a worker that is killed. Ray's session folder and torch's compile
    cache stay where they always were (RAY_TMPDIR, TORCHINDUCTOR_CACHE_DIR); this process's
    own temporary folder is fixed already (scratch.claim asked for it)."""
    import getpass
    import tempfile

    usual = tempfile.gettempdir()
    os.environ.setdefault("RAY_TMPDIR", usual)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(usual, f"torchinductor_{getpass.getuser()}"))
    os.environ["TMPDIR"] = str(scratch.claim())


def release_first() -> None:
    """Once Ray is up: release at exit before Ray's own atexit shutdown (atexit runs the
    last registered first), so a stop during the shutdown meets our handler."""
    if _token is not None:
        atexit.unregister(release)
        atexit.register(release)


def claim_scratch() -> None:
    """The command's scratch folder, made before Ray starts (its workers inherit the path)."""
    if scratch._claimed is None:
        atexit.register(scratch.release)
        stopping.on_forced_exit(scratch.release)
    scratch.claim()


def marked(token: str) -> list[int]:
    """The live processes (zombies aside) other than this one whose environment holds the token."""
    needle = f"{OWNER_ENV}={token}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes() + b"\0":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except (OSError, IndexError):
            continue
        found.append(int(entry.name))
    return found


def kill_marked(token: str, wait_s: float = WAIT_S) -> list[int]:
    """SIGKILL every process carrying the token and wait (up to wait_s) until none is left;
    returns any that outlived the wait."""
    deadline = time.monotonic() + wait_s
    while (left := marked(token)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    return left


def release() -> None:
    """Shut Ray down, kill the processes of this command's local Ray that outlived it, remove
    the scratch folder. Run at exit; a stop signal meanwhile makes it brief."""
    token = _token
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, _forced)
        except ValueError:  # not the main thread
            pass
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - what it left is killed next
        pass
    if token is not None:
        kill_marked(token)
        if os.environ.get(OWNER_ENV) == token:
            del os.environ[OWNER_ENV]
    scratch.release()


def _forced(signum, frame) -> None:
    """A stop while releasing: kill what is left and exit now."""
    if _token is not None:
        kill_marked(_token, wait_s=2.0)
    scratch.release()
    os._exit(128 + signum)
