"""The live status of a run, `iterations/<run>/status.json`: rewritten atomically every
`status.interval_s` seconds by a thread of the driver (iteration, stage, items done /
total, samples retrying, tokens/s, ETA, pid, host, heartbeat), so another terminal or
node can see how a run is doing (`python -m selflengthen inspect RUN`). A run whose
heartbeat is older than `status.stale_after_s` has died without saying so ("stale").
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from selflengthen.store import artifacts

FILE = "status.json"


def status_path(run_root: Path) -> Path:
    return Path(run_root) / FILE


class StatusWriter:
    """A daemon thread that writes `snapshot()` with a heartbeat every `interval_s`
    seconds, and calls `on_tick` (progress lines, token sampling) before each write."""

    def __init__(self, run_root: Path, snapshot: Callable[[], dict], interval_s: float, stale_after_s: float,
                 on_tick: Callable[[], None] | None = None):
        self.path = status_path(run_root)
        self.snapshot = snapshot
        self.interval_s = float(interval_s)
        self.stale_after_s = float(stale_after_s)
        self.on_tick = on_tick
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="selflengthen-status", daemon=True)

    def start(self) -> "StatusWriter":
        self.write("running")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.on_tick:
                    self.on_tick()
                self.write("running")
            except Exception:  # noqa: BLE001 - a status write must never stop the run
                pass

    def write(self, state: str) -> None:
        now = time.time()
        artifacts.write_json(self.path, {
            "state": state, **self.snapshot(), "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": round(self.started, 1), "heartbeat": round(now, 1),
            "heartbeat_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
            "interval_s": self.interval_s, "stale_after_s": self.stale_after_s})

    def stop(self, state: str, wait: bool = True) -> None:
        """The last write, `state`; the heartbeat stops (awaited unless `wait` is false: a
        forced exit has no time for it, and the heartbeat writes no more once told)."""
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)
        self.write(state)


def read_status(run_root: Path) -> dict | None:
    path = status_path(run_root)
    try:
        return artifacts.read_json(path)
    except (OSError, ValueError):
        return None


def describe(status: dict | None, now: float | None = None) -> str | None:
    """One line for `inspect`: what a running run is doing, or that it went stale."""
    if not status:
        return None
    now = time.time() if now is None else now
    age = now - float(status.get("heartbeat") or 0)
    state = status.get("state", "?")
    if state == "running" and age > float(status.get("stale_after_s") or 120):
        state = f"stale (no heartbeat for {age:.0f} s; the driver pid {status.get('pid')} on " \
                f"{status.get('host')} is gone or hung)"
    parts = [f"status: {state}"]
    if status.get("iteration") is not None:
        parts.append(f"iteration {status['iteration']}")
    if status.get("stage"):
        done, total = status.get("done"), status.get("total")
        count = f" {done}/{total} {status.get('unit', '')}".rstrip() if total else (f" {done}" if done else "")
        parts.append(f"stage {status['stage']}{count}")
    for key, fmt in (("retrying", "{} retrying"), ("tokens_per_second", "{:.0f} tok/s"), ("loss", "loss {:.3f}"),
                     ("eta_s", "ETA {:.0f} s")):
        if status.get(key):
            parts.append(fmt.format(status[key]))
    parts.append(f"pid {status.get('pid')} on {status.get('host')}, heartbeat {age:.0f} s ago")
    return ", ".join(parts)
