"""Stopping on Ctrl-C (SIGINT) and SIGTERM at any moment, the same way: the command stops,
its engines and local Ray instance are shut down, and the CLI prints one line (exit 130
or 143). SIGTERM raises `Terminated`, a KeyboardInterrupt.

Inside an event loop (`run_async`) a stop does not raise where it lands (in some chain's
task, half-way through a write): it cancels the loop's main task, as asyncio does for
Ctrl-C, so every `finally` and `async with` unwinds in its own task and context; the
exception is raised once the loop has stopped. The loop may, however, be blocked in a
synchronous call (waiting for an engine to start or a training task to end with
`ray.get`, merging weights): then the cancellation would only land when that call
returns, minutes later for an engine start. So a watchdog thread checks that the loop
took the cancellation within GRACE_S; where it did not, the signal is delivered to the
main thread again and raises inside the blocking call (ray.get, sleeps and lock waits
check for signals), abandoning it. A second Ctrl-C or SIGTERM raises at once.

Ray turns any exception raised by a signal handler inside `ray.get` into a plain
KeyboardInterrupt; `stopped_by_sigterm` tells the CLI which signal it was.

Last resort: a call that never checks for signals (a synchronous call to Ray's GCS, which
`timeout` kills along with the driver: Ray retries it for 60 s, then aborts the process)
keeps even the handler from running. A thread of ours learns of every signal at once
(signal.set_wakeup_fd); when the handler has not run FORCE_AFTER_S after a stop signal, it
runs what `on_forced_exit` registered (killing the command's Ray processes, removing its
scratch folder), prints the one line and exits (130/143)."""
from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
import time
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")
GRACE_S = 2.0  # how long an event loop may take to notice a stop before the signal is delivered again
FORCE_AFTER_S = 15.0  # how long a stop signal may wait for its handler before the process exits without it


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, `timeout`, a scheduler's notice before it kills): stops like Ctrl-C."""


class _MainTask:
    """The main task of the `run_async` call in progress, and the stop signal that cancelled it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.task = loop, None
        self.stop: int | None = None  # the signal that asked this loop to stop
        self.noticed = threading.Event()  # the loop ran the cancellation

    @property
    def terminated(self) -> bool:
        return self.stop == signal.SIGTERM


_running: _MainTask | None = None  # one at most: a loop cannot start inside a running one on this thread
_last_stop: int | None = None  # the last stop signal this process received
_handled = 0  # how many stop signals a handler has taken
_kept = "finished work is kept"  # what the running command keeps when stopped (set_kept)
_forced_exit: list[Callable[[], None]] = []
_ending = False  # the command is ending (quiet_ending)
_thread_hook = threading.excepthook  # the hook before ours: _quiet_ray_threads hands it every other failure
_guard: threading.Thread | None = None


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_stop(signum, frame) -> None:
    global _last_stop
    noticed()
    _last_stop = signum
    main = _running
    if main is not None and main.task is not None and main.stop is None:
        main.stop = signum  # a second signal raises at once, like a second Ctrl-C
        main.loop.call_soon_threadsafe(_cancel, main)
        threading.Thread(target=_watch, args=(main, signum), name="selflengthen-stop-watch", daemon=True).start()
        return
    raise _exception(signum)


def _cancel(main: _MainTask) -> None:
    main.noticed.set()
    main.task.cancel()


def _watch(main: _MainTask, signum: int) -> None:
    """The loop did not take the cancellation within GRACE_S (it is blocked in a call):
    deliver the signal again, which raises in the main thread wherever it waits."""
    if not main.noticed.wait(GRACE_S) and _running is main:
        signal.pthread_kill(threading.main_thread().ident, signum)


def noticed() -> None:
    """A handler took a stop signal (ours, or ray.init's while it runs)."""
    global _handled
    _handled += 1
    quiet_ending()


def quiet_ending() -> None:
    """The command is ending (a stop, or its one-line error): what Ray reports of the work it
    abandons stays silent, so the CLI's line is the last. The Ray tasks it abandons end in
    errors nobody will read, which Ray logs when their references are collected ("Unhandled
    error ... The worker died unexpectedly"; Ray reads the variable at that moment, in this
    process); Ray's own threads in this process (`ray_listen_error_messages`, ...) fail once
    its connections are torn down, which Python would print as a thread's traceback."""
    global _ending
    _ending = True
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"


def _quiet_ray_threads(args) -> None:
    """threading.excepthook: a Ray thread's failure once the command is ending is not reported."""
    if _ending and args.thread is not None and args.thread.name.startswith("ray_"):
        return
    _thread_hook(args)


def set_kept(kept: str) -> None:
    """What the running command keeps when stopped, for the line of a forced exit."""
    global _kept
    _kept = kept


def on_forced_exit(fn: Callable[[], None]) -> None:
    """`fn()` runs before a forced exit (module docstring)."""
    _forced_exit.append(fn)


def off_forced_exit(fn: Callable[[], None]) -> None:
    """`fn` no longer runs before a forced exit."""
    if fn in _forced_exit:
        _forced_exit.remove(fn)


def _guard_stuck_handlers(read_fd: int) -> None:
    """Every stop signal our handler should take is counted as it arrives; FORCE_AFTER_S on,
    fewer handler runs than signals means the main thread is stuck: exit without it."""
    received = 0

    def ours(signum: int) -> bool:
        return signum in (signal.SIGINT, signal.SIGTERM) and signal.getsignal(signum) is _on_stop

    while True:
        signum = os.read(read_fd, 1)[0]
        if not ours(signum):  # not ours to guard (a test's handler, ray.init's)
            continue
        received += 1
        time.sleep(FORCE_AFTER_S)
        while select.select([read_fd], [], [], 0)[0]:  # the signals that came meanwhile
            received += sum(1 for each in os.read(read_fd, 64) if ours(each))
        if _handled >= received:  # every one was taken: the stop is on its way (a second Ctrl-C forces it)
            continue
        for fn in list(_forced_exit):
            try:
                fn()
            except Exception:  # noqa: BLE001 - exiting either way
                pass
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        os.write(2, f"selflengthen: {what}; {_kept}, run the same command to resume\n".encode())
        os._exit(128 + signum)


def _arm_guard() -> None:
    """The thread that exits a process whose stop handler cannot run (main thread only)."""
    global _guard
    if _guard is None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        _guard = threading.Thread(target=_guard_stuck_handlers, args=(read_fd,), name="selflengthen-stop-guard",
                                  daemon=True)
        _guard.start()
        _guard.write_fd = write_fd
    signal.set_wakeup_fd(_guard.write_fd, warn_on_full_buffer=False)


def stopped_by_sigterm(err: BaseException) -> bool:
    """Whether a KeyboardInterrupt that reached the CLI came from SIGTERM (Ray re-raises a
    handler's Terminated inside ray.get as a plain KeyboardInterrupt)."""
    return isinstance(err, Terminated) or (type(err) is KeyboardInterrupt and _last_stop == signal.SIGTERM)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, with a stop cancelling the main task (then raising `Terminated` or
    KeyboardInterrupt) instead of raising inside whichever task it interrupts; a loop blocked
    in a call is interrupted there (module docstring). Every command's event loop runs here."""
    global _running
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    main: _MainTask | None = None
    try:
        with asyncio.Runner() as runner:
            main = _MainTask(runner.get_loop())

            async def watched() -> T:
                main.task = asyncio.current_task()
                return await coro

            _running = main
            try:
                result = runner.run(watched())
            finally:
                _running = None
    except BaseException as err:
        if main is not None and main.stop is not None:  # whatever the stop made fail (`timeout` signals
            raise _exception(main.stop) from None  # Ray's processes too: a call into them fails first)
        if not isinstance(err, (asyncio.CancelledError, KeyboardInterrupt)):
            raise
        if isinstance(err, KeyboardInterrupt) and _last_stop == signal.SIGTERM:
            raise Terminated() from None
        raise
    if main.stop is not None:  # the signal came as the main task was ending: stop all the same
        raise _exception(main.stop)
    return result


def stops_at_any_moment() -> None:
    """Ctrl-C and SIGTERM stop the command as this module describes (in the main thread
    only). Set at start and again after ray.init, whose core worker installs a SIGTERM
    handler of its own (it prints a stack dump and aborts, leaving Ray's agents running).
    An ignored SIGINT (a job started in the background) stays ignored."""
    global _last_stop, _thread_hook
    if threading.current_thread() is not threading.main_thread():
        return
    _last_stop = None
    _arm_guard()
    if threading.excepthook is not _quiet_ray_threads:
        _thread_hook, threading.excepthook = threading.excepthook, _quiet_ray_threads
    signal.signal(signal.SIGTERM, _on_stop)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_stop):
        signal.signal(signal.SIGINT, _on_stop)
