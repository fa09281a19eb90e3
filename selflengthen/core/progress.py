"""Progress of the stage that is running: items done / total, samples still retrying,
generated tokens per second, loss (training), rate and ETA, drawn with tqdm.

On a terminal the bar redraws in place; without one (CI, `nohup`, a cluster log) one line
is printed per 10% of the stage or per minute, whichever comes first, so a stage of any
size prints at most 10 lines plus one a minute. `progress=false` turns the output off
(the counts still feed status.json).

The stages report from their per-sample chains through the module functions below
(`expect`, `advance`, `retry`), which act on the reporter of the current stage: a
context variable that `observe.stage` sets around each stage, so the chains need no
extra argument and do nothing when no stage is being watched (unit tests, other verbs).
"""
from __future__ import annotations

import contextvars
import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 60.0  # without a terminal: at most one line per this many seconds, besides each 10%
PLAIN_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class StageProgress:
    """One stage's counters and their display; safe to read from the status thread."""

    def __init__(self, name: str, unit: str = "it", enabled: bool = True, stream: TextIO | None = None,
                 tty: bool | None = None, line_every_s: float = LINE_EVERY_S, label: str | None = None):
        self.name, self.unit, self.label = name, unit, label or name
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.enabled = enabled
        self.line_every_s = line_every_s
        self.total = 0
        self.done = 0
        self.resumed = 0
        self.retrying: set = set()
        self.extra: dict = {}  # shown after the counts: accepted, loss, ...
        self.tokens = 0  # generated tokens in this stage (sampled from the engine's usage)
        self.started = time.time()
        self._lock = threading.Lock()
        self._last_line = self.started
        self._last_decile = 0
        self._bar: tqdm | None = None

    # --- counters -------------------------------------------------------------------
    def expect(self, total: int, done: int = 0) -> None:
        """`total` more items, `done` of them already finished (resumed from a checkpoint)."""
        with self._lock:
            self.total += int(total)
            self.done += int(done)
            self.resumed += int(done)
        self._show()

    def advance(self, key: object = None, n: int = 1, **extra) -> None:
        with self._lock:
            self.done += n
            self.retrying.discard(key)
            self.extra.update(extra)
        self._show()

    def retry(self, key: object) -> None:
        with self._lock:
            self.retrying.add(key)

    def set(self, done: int | None = None, total: int | None = None, tokens: int | None = None, **extra) -> None:
        """Absolute values (training steps polled from the trainers, tokens from the engine)."""
        with self._lock:
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
            if tokens is not None:
                self.tokens = tokens
            self.extra.update(extra)
        self._show()

    # --- what the display and status.json show -----------------------------------
    def tokens_per_second(self) -> float | None:
        elapsed = time.time() - self.started
        return round(self.tokens / elapsed, 1) if self.tokens and elapsed > 0 else None

    def eta_s(self) -> float | None:
        """Seconds left at this stage's rate so far (resumed items do not count as speed)."""
        fresh = self.done - self.resumed
        if fresh <= 0 or not self.total:
            return None
        return round((self.total - self.done) * (time.time() - self.started) / fresh, 1)

    def snapshot(self) -> dict:
        with self._lock:
            return {"stage": self.name, "done": self.done, "total": self.total or None, "unit": self.unit,
                    "retrying": len(self.retrying), "tokens": self.tokens,
                    "tokens_per_second": self.tokens_per_second(), "eta_s": self.eta_s(),
                    "stage_started": round(self.started, 1), **self.extra}

    def postfix(self) -> str:
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.extra.items()]
        if self.retrying:
            parts.append(f"retrying={len(self.retrying)}")
        if (tps := self.tokens_per_second()) is not None:
            parts.append(f"tok/s={tps:.0f}")
        return ", ".join(parts)

    def line(self) -> str:
        """The progress as one line of text (tqdm's own meter: rate, elapsed, ETA)."""
        postfix = self.postfix()
        return tqdm.format_meter(self.done, self.total or None, time.time() - self.started, prefix=self.label,
                                 unit=self.unit, postfix=postfix or None,
                                 initial=self.resumed, bar_format=PLAIN_FORMAT if self.total else None)

    def _show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(total=self.total or None, desc=self.label, unit=self.unit, file=self.stream,
                                 initial=self.done, dynamic_ncols=True, leave=True)
            now = time.time()
            if now - self._last_line >= 0.2 or self.done >= self.total:  # redraw at most 5 times a second
                self._last_line = now
                self._bar.total = self.total or None
                self._bar.n = self.done
                self._bar.set_postfix_str(self.postfix(), refresh=False)
                self._bar.refresh()
            return
        now = time.time()
        decile = min(10, 10 * self.done // self.total) if self.total else 0
        if force or decile > self._last_decile or now - self._last_line >= self.line_every_s:
            with self._lock:
                if not (force or decile > self._last_decile or now - self._last_line >= self.line_every_s):
                    return
                self._last_decile = max(decile, self._last_decile)
                self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def tick(self) -> None:
        """Called every few seconds by the status thread: the once-a-minute line of a slow stage."""
        if self.enabled and not self.tty and time.time() - self._last_line >= self.line_every_s:
            self._show()

    def close(self) -> None:
        if self._bar is not None:
            self._last_line = 0.0
            self._show()  # the final count
            self._bar.close()
            self._bar = None
        elif self.enabled and not self.tty and self.total and self._last_decile < 10 and self.done > self.resumed:
            self._show(force=True)  # the final count, when the last 10% line was not reached


_CURRENT: contextvars.ContextVar[StageProgress | None] = contextvars.ContextVar("selflengthen_progress",
                                                                              default=None)


def current() -> StageProgress | None:
    return _CURRENT.get()


def activate(reporter: StageProgress | None) -> contextvars.Token:
    return _CURRENT.set(reporter)


def deactivate(token: contextvars.Token) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:  # unwinding in another context (a second SIGTERM raises inside whichever task it hits)
        _CURRENT.set(None)


def expect(total: int, done: int = 0) -> None:
    """The current stage has `total` more items, `done` of them finished already."""
    if (p := _CURRENT.get()) is not None:
        p.expect(total, done)


def advance(key: object = None, **extra) -> None:
    """One item of the current stage finished (`key`: its id, if it was retrying)."""
    if (p := _CURRENT.get()) is not None:
        p.advance(key, **extra)


def retry(key: object) -> None:
    """The item `key` failed a try and is being tried again."""
    if (p := _CURRENT.get()) is not None:
        p.retry(key)
