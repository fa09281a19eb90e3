"""A scripted stand-in engine for unit tests of pure stage logic (prompt flow, filters,
retries). It is never evidence that generation works: the end-to-end tests use vLLM."""
from __future__ import annotations

from selflengthen.engines import Request, Sampling


class ScriptedEngine:
    """Answers each request with `respond(request, sampling)`, recording every call."""

    def __init__(self, respond):
        self.respond = respond
        self.calls: list[tuple[list[Request], Sampling]] = []

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        self.calls.append((list(requests), sampling))
        return [self.respond(r, sampling) for r in requests]
