"""vLLM's engine with its core inside this process, for CPUs (engine.cpu_single_process).

vLLM's async engine (`AsyncLLM`) always runs its engine core in a process of its own: on
a CPU that process imports vLLM again (about 11 s of every engine start on the 2-core
machine) and every decoding step's outputs cross a socket to the frontend. Here vLLM's
`LLMEngine` runs with its core in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the `uni`
executor) on one thread of ours that adds the requests handed to it, calls `step()` while
any are unfinished, and hands each finished output back to the event loop that asked. To
the caller it is the same per-request coroutine as `AsyncLLM.generate`: continuous
batching over whatever is in flight, so chains of dependent calls keep the batch full.

All of vLLM's calls happen on that one thread (vLLM's engine is not thread-safe); the
event loop only puts work in a queue and awaits futures. `call` runs a function of the
engine there while nothing is in flight (merged serving swaps the weights in place so).
"""
from __future__ import annotations

import asyncio
import queue
import threading

_STOP = object()
_ABORT = object()
_CALL = object()


class InprocessEngine:
    """`await engine.generate(prompt, params, request_id, lora_request)` -> the final
    `RequestOutput`; every vLLM call runs on the engine's own stepping thread."""

    def __init__(self, engine_args, threads: int):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # a request is queued only while the thread will still answer it
        self._closed: BaseException | None = None  # why requests are refused: the engine died or stopped
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine_args, threads), name="vllm-steps",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._closed is not None:
            raise self._closed

    # --- the event loop's side --------------------------------------------------------------
    async def generate(self, prompt, params, request_id: str, lora_request=None):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            if self._closed is not None:
                raise RuntimeError(f"the vLLM engine stopped: {self._closed}")
            self._inbox.put((request_id, prompt, params, lora_request, loop, done))
        try:
            return await done
        except asyncio.CancelledError:
            self._inbox.put((_ABORT, request_id))  # the caller gave up: free its batch slot
            raise

    async def call(self, fn):
        """`fn(llm_engine)` on the stepping thread, between steps, with no request in flight
        (it fails otherwise): how the engine's weights are swapped in place."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            if self._closed is not None:
                raise RuntimeError(f"the vLLM engine stopped: {self._closed}")
            self._inbox.put((_CALL, fn, loop, done))
        return await done

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout)

    # --- the stepping thread ----------------------------------------------------------------
    def _run(self, engine_args, threads: int) -> None:
        try:
            import torch
            from vllm.v1.engine.llm_engine import LLMEngine

            torch.set_num_threads(threads)  # before vLLM's CPU worker forbids changing it
            self.engine = LLMEngine.from_engine_args(engine_args)
        except BaseException as err:  # noqa: BLE001 - raised again on the caller's thread
            self._closed = err
            self._started.set()
            return
        self._started.set()
        waiting: dict[str, tuple] = {}  # request id -> (its event loop, its future)
        reason: BaseException = RuntimeError("the vLLM engine was shut down")
        try:
            while True:
                # block for work only when nothing is being generated
                item = self._inbox.get() if not self.engine.has_unfinished_requests() else self._next()
                while item is not None:
                    if item is _STOP:
                        return
                    self._take(item, waiting)
                    item = self._next()
                for out in self.engine.step():
                    if out.finished and out.request_id in waiting:
                        loop, future = waiting.pop(out.request_id)
                        _hand_over(loop, future, out, None)
        except BaseException as err:  # noqa: BLE001 - every waiting caller learns why
            reason = err
        finally:
            with self._lock:  # from here on generate() refuses; answer everyone already queued
                self._closed = self._closed or reason
            for loop, future in waiting.values():
                _hand_over(loop, future, None, reason)
            while (item := self._next()) is not None:
                if isinstance(item, tuple) and len(item) == 6:
                    _hand_over(item[4], item[5], None, reason)
                elif isinstance(item, tuple) and item[0] is _CALL:
                    _hand_over(item[2], item[3], None, reason)
            try:
                self.engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - the process is ending the engine either way
                pass

    def _next(self):
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _take(self, item: tuple, waiting: dict) -> None:
        if item[0] is _ABORT:
            if waiting.pop(item[1], None) is not None:
                self.engine.abort_request([item[1]])
            return
        if item[0] is _CALL:
            _, fn, loop, future = item
            try:
                if self.engine.has_unfinished_requests():
                    raise RuntimeError("the engine has requests in flight")
                result, error = fn(self.engine), None
            except Exception as err:  # noqa: BLE001 - raised again on the caller's loop
                result, error = None, err
            _hand_over(loop, future, result, error)
            return
        request_id, prompt, params, lora_request, loop, future = item
        try:
            self.engine.add_request(request_id, prompt, params, lora_request=lora_request)
        except Exception as err:  # noqa: BLE001 - a bad request fails alone
            try:  # vLLM may have registered it before failing: never leave it unfinished
                self.engine.abort_request([request_id])
            except Exception:  # noqa: BLE001
                pass
            _hand_over(loop, future, None, err)
            return
        waiting[request_id] = (loop, future)


def _hand_over(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result, error: BaseException | None) -> None:
    """Settle a caller's future on its own event loop (a loop closed meanwhile has no caller)."""
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:
        pass


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
