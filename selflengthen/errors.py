"""The one exception type for user-facing problems: the CLI prints its message as a
single line (what is wrong and how to fix it) instead of a traceback. SIGTERM is turned
into `Terminated`, so a terminated command stops the way Ctrl-C stops it."""
from __future__ import annotations

import signal
import threading


class UserError(Exception):
    """Bad input: a file, a config value, a path, a server. The message names the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler's notice before it kills): stops like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def sigterm_stops_like_ctrl_c() -> None:
    """SIGTERM raises Terminated in the main thread: the running stage stops, the engines
    and the local Ray instance are shut down, and the CLI prints one line. Set at start and
    again after ray.init, whose core worker installs a SIGTERM handler of its own (it prints
    a stack dump and aborts, leaving Ray's agent processes running)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
