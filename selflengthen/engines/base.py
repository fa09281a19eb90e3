"""The engine contract shared by the vLLM engine and the test doubles.

One call shape serves chat and raw completion alike: the request's messages are rendered
with the model's chat template up to the assistant turn, `prefix` is appended as text the
assistant has already written, and the model continues from there. An empty prefix is a
plain chat turn; a non-empty one is the prefilled completion that the augmentation (the
few-shot list) and Stage 2 of the extension (the expanded first half) need.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.1
    max_tokens: int = 16384
    stop: tuple[str, ...] = ()

    def with_stops(self, *extra: str) -> "Sampling":
        return replace(self, stop=tuple(dict.fromkeys(self.stop + extra)))

    def with_max_tokens(self, max_tokens: int) -> "Sampling":
        return replace(self, max_tokens=max_tokens)


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    prefix: str = ""
    adapter: str | None = None  # a LoRA adapter's role name ("generator", "extender"), or the base model
    seed: int | None = None  # per-request sampling seed, for reproducible runs


class Engine(Protocol):
    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        """One completion per request, in the same order (only the new text)."""
        ...
