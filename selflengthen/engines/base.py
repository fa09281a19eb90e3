"""The engine contract: one async call per request; a batch is a gather over it.

Every engine (vLLM's async engine, the OpenAI-compatible client, transformers) and the
replica pool implement `async complete(request, sampling) -> Completion`. A stage runs
each sample's chain of calls as its own coroutine (try -> check -> retry; Stage 1 ->
Stage 2 -> next round), many chains in flight at once, so the engine's batch stays full
and no sample waits for another (no lock-step rounds).

One call shape serves chat and raw completion alike: the request's messages are rendered
with the model's chat template up to the assistant turn, `prefix` is appended as text the
assistant has already written, and the model continues from there. An empty prefix is a
plain chat turn; a non-empty one is the prefilled completion that the augmentation (the
few-shot list) and Stage 2 of the extension (the expanded first half) need.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

from selflengthen.core.errors import run_async


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

    def with_temperature(self, temperature: float) -> "Sampling":
        return replace(self, temperature=temperature)


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    prefix: str = ""
    adapter: str | None = None  # a LoRA adapter's role name ("generator", "extender"), or the base model
    seed: int | None = None  # per-request sampling seed, for reproducible runs
    key: str | None = None  # the sample's id: a pool sends a sample's calls to the same replica


@dataclass(frozen=True)
class Completion:
    """The new text of one request, with what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # "stop" (end of turn or a stop string), "length" (hit max_tokens or the context),
    # "no_room" (the prompt alone fills the context: nothing was generated)
    finish_reason: str = "stop"
    # what ended it, when the engine knows: the end-of-turn token's text (e.g. "<|im_end|>"),
    # "stop_string" or "max_tokens"; counted per adapter in the usage as "ended_by:<what>"
    ended_by: str = ""


class Engine(Protocol):
    async def complete(self, request: Request, sampling: Sampling) -> Completion:
        """The model's continuation of one request (only the new text)."""
        ...

    def usage(self) -> dict[str, dict]:
        """Per adapter name ("base" for none): path, requests, prompt and completion tokens."""
        ...


def render_ids(tokenizer, request: Request) -> list[int]:
    """The request as token ids: the chat template up to the assistant turn, then the
    prefix, with no special tokens added (the template has its own BOS, if any)."""
    text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text + request.prefix, add_special_tokens=False))


def token_ids(tokenizer, tokens: list[str]) -> list[int]:
    """The ids of the named special tokens (end-of-turn) the tokenizer knows."""
    ids = {tokenizer.convert_tokens_to_ids(t) for t in tokens}
    return sorted(i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id)


def check_adapter_folders(adapters: dict[str, str]) -> None:
    for name, path in adapters.items():
        if not (Path(path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"adapter {name!r} at {path} has no adapter_config.json")


async def complete_all(engine: Engine, requests: Iterable[Request], sampling: Sampling) -> list[Completion]:
    """A batch: every request in flight together, results in request order."""
    return list(await asyncio.gather(*(engine.complete(r, sampling) for r in requests)))


def run_batch(engine: Engine, requests: list[Request], sampling: Sampling) -> list[str]:
    """Blocking convenience for scripts with no event loop of their own."""
    return [c.text for c in run_async(complete_all(engine, requests, sampling))]


@dataclass
class UsageMeter:
    """Requests and tokens served, per adapter; every engine keeps one."""

    paths: dict[str, str | None] = field(default_factory=dict)
    served: dict[str, dict] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # per adapter, how to make the last prompt's text: decoded only when a snapshot is taken
    # (one decode per snapshot, not one per request on the engine's process)
    last_prompt: dict[str, Callable[[], str]] = field(default_factory=dict)

    def record(self, adapter: str | None, completion: Completion, prompt: Callable[[], str] | None = None) -> None:
        name = adapter or "base"
        entry = self.served.setdefault(name, {"path": self.paths.get(name), "requests": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0})
        entry["requests"] += 1
        entry["prompt_tokens"] += completion.prompt_tokens
        entry["completion_tokens"] += completion.completion_tokens
        if completion.ended_by:
            key = f"ended_by:{completion.ended_by}"
            entry[key] = entry.get(key, 0) + 1
        if prompt is not None:  # the last prompt as the model saw it (chat template applied)
            self.last_prompt[name] = prompt

    def snapshot(self) -> dict[str, dict]:
        out = {name: dict(info) for name, info in self.served.items()}
        for name, prompt in self.last_prompt.items():
            out[name]["last_prompt"] = prompt()
        return out


def usage_delta(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """What was served between two `usage()` snapshots (adapters with no new request dropped)."""
    out = {}
    for name, info in after.items():
        prev = before.get(name, {})
        delta = {k: v - prev.get(k, 0) for k, v in info.items() if isinstance(v, (int, float))}
        if delta.get("requests", 0) > 0:
            out[name] = {"path": info.get("path"), **delta}
            if "last_prompt" in info:
                out[name]["last_prompt"] = info["last_prompt"]
    return out


def merge_usage(parts: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """Sum per-replica usage into one."""
    total: dict[str, dict] = {}
    for part in parts:
        for name, info in part.items():
            entry = total.setdefault(name, {"path": info.get("path")})
            if "last_prompt" in info:
                entry.setdefault("last_prompt", info["last_prompt"])
            for k, v in info.items():
                if isinstance(v, (int, float)):
                    entry[k] = entry.get(k, 0) + v
    return total
