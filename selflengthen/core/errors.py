"""The one exception type for user-facing problems: the CLI prints its message as a
single line (what is wrong and how to fix it) instead of a traceback.

Stopping (Ctrl-C, SIGTERM -> `Terminated`, the event loop's `run_async`) lives in
core/stopping.py; its names are re-exported here, where the commands have always found them."""
from __future__ import annotations

import re

from selflengthen.core.stopping import Terminated, run_async, stopped_by_sigterm, stops_at_any_moment

__all__ = ["UserError", "Terminated", "run_async", "sigterm_stops_like_ctrl_c", "stopped_by_sigterm"]


class UserError(Exception):
    """Bad input: a file, a config value, a path, a server. The message names the fix."""


sigterm_stops_like_ctrl_c = stops_at_any_moment  # the name the CLI and Ray's setup call


_NODE_MEMORY = re.compile(r"was ([\d.]+GB) used / ([\d.]+GB) limit")


def memory_kill(err: BaseException) -> str | None:
    """One line for a Ray worker killed by Ray's memory monitor (ray.exceptions.OutOfMemoryError,
    itself or as the cause of a task's error), naming the settings that lower what the
    command holds; None for any other error. Ray is not imported here (the CLI's error path)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "OutOfMemoryError" and type(err).__module__.startswith("ray"):
            m = _NODE_MEMORY.search(str(err))
            used = f" ({m[1]} used of {m[2]})" if m else ""
            return (f"a worker was killed because the machine ran low on memory{used}: stop other programs "
                    "holding memory, or lower what this command holds (engine.cpu_memory_utilization on a CPU, "
                    "engine.gpu_memory_utilization or engine.max_num_seqs, train.per_device_batch_size)")
        err = err.__cause__ or getattr(err, "cause", None) or err.__context__
    return None
