"""The one exception type for user-facing problems: the CLI prints its message as a
single line (what is wrong and how to fix it) instead of a traceback. SIGTERM is turned
into `Terminated`, so a terminated command stops the way Ctrl-C stops it.

Inside an event loop (`run_async`), SIGTERM does not raise where it lands (in some
chain's task, half-way through a write): it cancels the loop's main task, as asyncio
does for Ctrl-C, so every `finally` and `async with` unwinds in its own task and
context, and `Terminated` is raised once the loop has stopped."""
from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input: a file, a config value, a path, a server. The message names the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler's notice before it kills): stops like Ctrl-C."""


class _MainTask:
    """The main task of the `run_async` call in progress, and whether SIGTERM cancelled it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.task, self.terminated = loop, None, False


_running: _MainTask | None = None  # one at most: a loop cannot start inside a running one on this thread


def _raise_terminated(signum, frame) -> None:
    main = _running
    if main is not None and main.task is not None and not main.terminated:
        main.terminated = True  # a second SIGTERM raises at once, like a second Ctrl-C
        main.loop.call_soon_threadsafe(main.task.cancel)
        return
    raise Terminated()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, with SIGTERM cancelling the main task (then raising `Terminated`)
    instead of raising inside whichever task it interrupts. Every command's event loop
    runs through here."""
    global _running
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    with asyncio.Runner() as runner:
        main = _MainTask(runner.get_loop())

        async def watched() -> T:
            main.task = asyncio.current_task()
            return await coro

        _running = main
        try:
            result = runner.run(watched())
        except asyncio.CancelledError:
            if main.terminated:
                raise Terminated() from None
            raise
        finally:
            _running = None
        if main.terminated:  # SIGTERM came as the main task was ending: stop all the same
            raise Terminated()
        return result


def sigterm_stops_like_ctrl_c() -> None:
    """SIGTERM raises Terminated in the main thread: the running stage stops, the engines
    and the local Ray instance are shut down, and the CLI prints one line. Set at start and
    again after ray.init, whose core worker installs a SIGTERM handler of its own (it prints
    a stack dump and aborts, leaving Ray's agent processes running)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
