"""A scripted stand-in engine for unit tests of pure stage logic (prompt flow, filters,
retries). It is never evidence that generation works: the end-to-end tests use vLLM."""
from __future__ import annotations

import asyncio

from selflengthen.engines import Completion, Request, Sampling, UsageMeter


class ScriptedEngine:
    """Answers each request with `respond(request, sampling)`, recording every call in
    the order the calls were made. `delay(request)` (seconds) lets a test make some
    requests slower than others, to show that chains do not wait for each other."""

    def __init__(self, respond, delay=None):
        self.respond = respond
        self.delay = delay
        self.calls: list[tuple[Request, Sampling]] = []
        self.meter = UsageMeter()

    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        self.calls.append((request, sampling))
        if self.delay:
            await asyncio.sleep(self.delay(request))
        else:
            await asyncio.sleep(0)
        text = self.respond(request, sampling)
        done = Completion(text, prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
                          completion_tokens=len(text.split()))
        self.meter.record(request.adapter, done)
        return done

    def usage(self) -> dict[str, dict]:
        return self.meter.snapshot()

    @property
    def requests(self) -> list[Request]:
        return [r for r, _ in self.calls]
