"""The one exception type for user-facing problems: the CLI prints its message as a
single line (what is wrong and how to fix it) instead of a traceback.

Stopping (Ctrl-C, SIGTERM -> `Terminated`, the event loop's `run_async`) lives in
core/stopping.py; its names are re-exported here, where the commands have always found them."""
from __future__ import annotations

from selflengthen.core.stopping import Terminated, run_async, stopped_by_sigterm, stops_at_any_moment

__all__ = ["UserError", "Terminated", "run_async", "sigterm_stops_like_ctrl_c", "stopped_by_sigterm"]


class UserError(Exception):
    """Bad input: a file, a config value, a path, a server. The message names the fix."""


sigterm_stops_like_ctrl_c = stops_at_any_moment  # the name the CLI and Ray's setup call
