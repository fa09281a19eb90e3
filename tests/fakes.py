"""A scripted stand-in engine for unit tests of pure stage logic (prompt flow, filters,
retries). It is never evidence that generation works: the end-to-end tests use vLLM."""
from __future__ import annotations

import asyncio
import inspect

from selflengthen.engines import Completion, Request, Sampling, UsageMeter


class ScriptedEngine:
    """Answers each request with `respond(request, sampling)`, recording every call in
    the order the calls were made. `delay(request)` lets a test hold some requests back,
    to show that chains do not wait for each other: seconds, or an awaitable such as
    `held_until(event)`, which holds a request until what the test wants to happen first
    has happened (no race with the host's speed). `respond` may return a Completion (to
    say how the text ended) instead of its text."""

    def __init__(self, respond, delay=None):
        self.respond = respond
        self.delay = delay
        self.calls: list[tuple[Request, Sampling]] = []
        self.meter = UsageMeter()

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        self.calls.append((request, sampling))
        if self.delay:
            wait = self.delay(request)
            await (wait if inspect.isawaitable(wait) else asyncio.sleep(wait))
        else:
            await asyncio.sleep(0)
        text = self.respond(request, sampling)
        done = text if isinstance(text, Completion) else Completion(
            text, prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
            completion_tokens=len(text.split()))
        self.meter.record(request.adapter, done)
        return done

    def usage(self) -> dict[str, dict]:
        return self.meter.snapshot()

    @property
    def requests(self) -> list[Request]:
        return [r for r, _ in self.calls]


async def held_until(event: asyncio.Event, timeout: float = 30.0) -> None:
    """A "slow" request that is slow until `event` is set, not for a number of seconds: the
    order a test asserts then holds on any machine. If the code under test made the other
    chains wait for this request, `event` never comes; after `timeout` the request goes on
    and the test fails on the order it recorded, rather than hanging."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass


def typed(cfg, verb: str = "run"):
    """The verb's typed settings of a composed DictConfig, as preflight.settings gives them
    (without the up-front checks of files and models)."""
    from omegaconf import OmegaConf

    from selflengthen.config import schema

    return schema.VERBS[verb].model_validate(OmegaConf.to_container(cfg, resolve=True))


def stage_inputs(settings, it, engine=None, sampling=None, adapters=None, pool=None):
    """What the loop would hand a stage of iteration `it` (pipeline/stage.py's Inputs):
    the settings' seed, languages and quality rules, with the given engine and sampling."""
    from selflengthen.pipeline.stage import Inputs

    return Inputs(it, settings.seed, tuple(settings.model.languages), "model", adapters or {}, engine=engine,
                  sampling=sampling, rules=settings.loop.quality_rules(), pool=pool or {})


def tracker_of(cfg, run_root):
    """The run's Tracker as observe.Watcher builds it from a composed config."""
    from selflengthen.tracking import Tracker

    settings = typed(cfg)
    return Tracker(settings.tracking, settings.run.name, settings.paths.iterations_dir,
                   settings.model_dump(mode="json"), run_root)
