"""The in-process vLLM engine's stepping thread (engines/vllm_inprocess.py): its hand-offs
between the event loop and the thread, with a stand-in for vLLM's LLMEngine (the real
engine runs in the end-to-end, replicas and eval tests)."""
from __future__ import annotations

import asyncio
import threading
import time
import types

import pytest

from selflengthen.engines.vllm_inprocess import InprocessEngine


class SteppedStandIn:
    """Finishes each request after `steps[prompt]` calls of step(); records what it was told."""

    def __init__(self, steps: dict[str, float], fail_on: str | None = None, die_at_step: int | None = None,
                 batch_of: int = 0):
        self.steps, self.fail_on, self.die_at_step = steps, fail_on, die_at_step
        # batch_of=N: step() does nothing (and is not counted) until N requests were added, so
        # that a test sees one batch whatever the order in which the threads ran
        self.batch_of = batch_of
        self.left: dict[str, int] = {}
        self.prompts: dict[str, str] = {}
        self.aborted: list[str] = []
        self.calls = 0
        self.threads: set[str] = set()
        self.shut = False
        self.engine_core = types.SimpleNamespace(shutdown=self._shutdown)

    def _shutdown(self):
        self.shut = True

    def has_unfinished_requests(self) -> bool:
        return bool(self.left)

    def add_request(self, request_id, prompt, params, lora_request=None):
        self.threads.add(threading.current_thread().name)
        if prompt == self.fail_on:
            raise ValueError(f"bad prompt {prompt}")
        self.left[request_id], self.prompts[request_id] = self.steps[prompt], prompt

    def abort_request(self, ids):
        self.aborted += ids
        for i in ids:
            self.left.pop(i, None)

    def step(self):
        self.threads.add(threading.current_thread().name)
        if len(self.prompts) < self.batch_of:
            time.sleep(0.001)
            return []
        self.calls += 1
        if self.die_at_step is not None and self.calls >= self.die_at_step:
            raise RuntimeError("engine core died")
        outs = []
        for rid in list(self.left):
            self.left[rid] -= 1
            finished = self.left[rid] <= 0
            if finished:
                del self.left[rid]
            outs.append(types.SimpleNamespace(request_id=rid, finished=finished, text=self.prompts[rid]))
        return outs


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # the suite's own process keeps its threads
    def install(**kwargs):
        fake = SteppedStandIn(**kwargs)
        monkeypatch.setattr("vllm.v1.engine.llm_engine.LLMEngine.from_engine_args", lambda args: fake)
        return fake

    return install


def test_each_caller_gets_its_own_output_while_all_share_the_steps(stand_in):
    fake = stand_in(steps={"long": 5, "short": 1, "mid": 3}, batch_of=3)
    engine = InprocessEngine(engine_args=None, threads=1)

    async def main():
        calls = (engine.generate(p, None, f"r{i}") for i, p in enumerate(["long", "short", "mid"]))
        return await asyncio.wait_for(asyncio.gather(*calls), 30)

    outs = asyncio.run(main())
    engine.shutdown()
    assert [o.text for o in outs] == ["long", "short", "mid"]
    assert fake.calls == 5  # one batch: the longest request's steps, not their sum (9)
    assert fake.threads == {"vllm-steps"} and fake.shut  # every vLLM call on the stepping thread


def test_requests_after_shutdown_are_refused_at_once(stand_in):
    stand_in(steps={"a": 1})
    engine = InprocessEngine(engine_args=None, threads=1)
    engine.shutdown()

    async def main():
        with pytest.raises(RuntimeError, match="the vLLM engine stopped: the vLLM engine was shut down"):
            await asyncio.wait_for(engine.generate("a", None, "late"), 10)

    asyncio.run(main())


def test_a_cancelled_caller_frees_its_slot_and_a_bad_request_fails_alone(stand_in):
    fake = stand_in(steps={"slow": float("inf"), "ok": 2}, fail_on="bad")  # slow ends only when aborted
    engine = InprocessEngine(engine_args=None, threads=1)

    async def main():
        slow = asyncio.create_task(engine.generate("slow", None, "slow-1"))
        bad = asyncio.create_task(engine.generate("bad", None, "bad-1"))
        ok = await asyncio.wait_for(engine.generate("ok", None, "ok-1"), 30)
        with pytest.raises(ValueError, match="bad prompt"):
            await bad
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        for _ in range(200):  # the thread takes the abort at its next step
            if "slow-1" in fake.aborted:
                break
            await asyncio.sleep(0.01)
        return ok

    assert asyncio.run(main()).text == "ok"
    engine.shutdown()
    assert fake.aborted == ["bad-1", "slow-1"] and not fake.left  # a failed add is aborted too, in case vLLM kept it


def test_a_call_runs_on_the_stepping_thread_only_while_nothing_is_in_flight(stand_in):
    """How merged serving swaps weights: `call(fn)` runs fn(engine) on the thread vLLM lives on,
    and refuses while a request is unfinished (its tokens would mix two models' weights)."""
    fake = stand_in(steps={"slow": float("inf"), "ok": 1})
    engine = InprocessEngine(engine_args=None, threads=1)

    async def main():
        assert await asyncio.wait_for(engine.call(lambda e: (e is fake, threading.current_thread().name)), 30) == (
            True, "vllm-steps")
        slow = asyncio.create_task(engine.generate("slow", None, "slow-1"))
        for _ in range(200):
            if fake.left:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="requests in flight"):
            await asyncio.wait_for(engine.call(lambda e: None), 30)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        for _ in range(200):
            if not fake.left:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(KeyError, match="boom"):  # fn's own error reaches the caller
            await asyncio.wait_for(engine.call(lambda e: {}["boom"]), 30)
        return (await asyncio.wait_for(engine.generate("ok", None, "ok-1"), 30)).text  # still serving

    assert asyncio.run(main()) == "ok"
    engine.shutdown()

    async def after():
        with pytest.raises(RuntimeError, match="the vLLM engine stopped"):
            await asyncio.wait_for(engine.call(lambda e: None), 10)

    asyncio.run(after())


def test_an_engine_that_dies_fails_every_waiting_caller_and_later_ones(stand_in):
    stand_in(steps={"a": 50, "b": 50}, die_at_step=3)
    engine = InprocessEngine(engine_args=None, threads=1)

    async def main():
        results = await asyncio.wait_for(asyncio.gather(engine.generate("a", None, "a"),
                                                        engine.generate("b", None, "b"), return_exceptions=True), 30)
        with pytest.raises(RuntimeError, match="the vLLM engine stopped: engine core died"):
            await asyncio.wait_for(engine.generate("a", None, "later"), 10)
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "engine core died" in str(r) for r in results)
    engine.shutdown()


def test_a_start_failure_is_raised_to_whoever_started_it(monkeypatch):
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)

    def refuse(args):
        raise RuntimeError("less than requested memory for kv")

    monkeypatch.setattr("vllm.v1.engine.llm_engine.LLMEngine.from_engine_args", refuse)
    with pytest.raises(RuntimeError, match="requested memory for kv"):
        InprocessEngine(engine_args=None, threads=1)
