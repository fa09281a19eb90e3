"""Stage 3: two-stage extension by the extender (algorithm.md 1.3).

Each attempt is its own chain, starting from the initial response, for up to `rounds`
rounds:
  Stage 1 (chat): the extender expands the first floor(n/2) paragraphs; only the first
    floor(2m/3) of its m paragraphs are kept (the tail tends to wrap up).
  Stage 2 (prefilled completion): the extender is asked to expand the *whole* current
    response, with its answer already begun by the kept Stage-1 text, so the expanded
    first half is the demonstration and the continuation expands the rest.
  extended = kept text + continuation; it replaces the best when it passes the quality
  check and is longer.
With `max_growth` set (not the paper's: it sets no bound), a round's text longer than
max_growth x the initial words is cut back to its longest prefix within that bound that
ends at a line break on a terminal mark (core.text.trim_to_words); the cut-off tail takes
the engine's cap with it, if it was cut there. This holds the next generator's targets
within its token cap and coherence, iteration after iteration.
With `drop_preface` set (not the paper's either), a first line by which the extender
introduces its answer ("Here is the expanded version:") is dropped from Stage 1's text
before it becomes Stage 2's prefix (core.text.drop_preface): left in, it opens the extension,
and the quality check rejects the whole text for its meta word.
An attempt is accepted when best has more than `min_growth` x the initial words; a failed
attempt is tried again, up to `retries` tries. Every attempt's Stage 2 follows its own
Stage 1 at once and all attempts are in flight together: no attempt waits for another.
Each finished attempt is checkpointed as it finishes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from selflengthen.config import schema
from selflengthen.core import progress, prompting, signals
from selflengthen.core.quality import QualityCheck
from selflengthen.core.resample import drop_short
from selflengthen.core.text import (continue_after, count_words, drop_preface, first_half, keep_leading_two_thirds,
                                    trim_to_words)
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.pipeline.stage import Inputs
from selflengthen.store import artifacts
from selflengthen.store.samples import SampleLog, stable_seed


@dataclass
class ExtendStats:
    attempts: int = 0
    tries: int = 0
    stage1_requests: int = 0
    stage2_requests: int = 0
    unsplittable: int = 0
    improved_rounds: int = 0
    accepted: int = 0
    resumed_attempts: int = 0
    trimmed: int = 0
    prefaces_dropped: int = 0


@dataclass
class ExtendChain:
    """How one attempt runs: the same for every attempt of the stage."""

    engine: Engine
    sampling: Sampling
    check: QualityCheck
    retries: int
    rounds: int
    min_growth: float
    adapter: str | None
    seed: object
    max_growth: float | None = None  # None: no bound (the paper's)
    drop_preface: bool = False  # False: a reply's "Here is the expanded version:" stays in (the paper's)
    stats: ExtendStats = field(default_factory=ExtendStats)

    async def round(self, item: dict, current: str, ident: tuple) -> tuple[str, bool] | None:
        """Stage 1 then Stage 2 on `current`: (the extended text, whether Stage 2 was cut at
        the token cap), or None when it cannot split."""
        half, taken, _ = first_half(current)
        if taken == 0:
            self.stats.unsplittable += 1
            return None
        key = ident[0]
        stage1 = await self.engine.complete(
            Request(prompting.extender_request(item["instruction"], half, item["language"]), adapter=self.adapter,
                    seed=stable_seed(self.seed, *ident, 1), key=key), self.sampling)
        self.stats.stage1_requests += 1
        kept = keep_leading_two_thirds(self.unprefaced(stage1.text, half, item["language"]))
        prefix = kept + "\n\n" if kept else ""
        stage2 = await self.engine.complete(
            Request(prompting.extender_request(item["instruction"], current, item["language"]), prefix=prefix,
                    adapter=self.adapter, seed=stable_seed(self.seed, *ident, 2), key=key), self.sampling)
        self.stats.stage2_requests += 1
        extended = continue_after(prefix, stage2.text)
        if not prefix:  # with a prefix the answer opens with Stage 1's text, already without one
            extended = self.unprefaced(extended, current, item["language"])
        return extended, signals.is_cut(stage2.finish_reason, stage2.ended_by)

    def unprefaced(self, text: str, source: str, language: str) -> str:
        """text without a first line that introduces it (core.text.drop_preface), when
        drop_preface is set; unchanged otherwise."""
        if not self.drop_preface:
            return text
        out = drop_preface(text, language, source)
        if out is not text:
            self.stats.prefaces_dropped += 1
        return out

    def bounded(self, extended: str, cut: bool, initial_words: int, language: str) -> tuple[str, bool]:
        """The round's text within max_growth x the initial words (unchanged without a bound)."""
        if self.max_growth is None or count_words(extended) <= self.max_growth * initial_words:
            return extended, cut
        self.stats.trimmed += 1
        marks = self.check.rules[language].terminal_marks
        return trim_to_words(extended, int(self.max_growth * initial_words), marks), False

    async def attempt(self, item: dict, index: int) -> dict:
        """One attempt's chain, with its retries; returns its checkpoint entry."""
        attempt_id = f"{item['id']}-a{index}"
        initial_words = count_words(item["response"])
        for try_no in range(1, self.retries + 1):
            self.stats.tries += 1
            if try_no > 1:
                progress.retry(attempt_id)
            current = best = item["response"]
            history = [initial_words]
            for round_no in range(1, self.rounds + 1):
                done = await self.round(item, current, (attempt_id, try_no, round_no))
                if done is None:
                    break  # nothing to split: later rounds would see the same text
                extended, cut = self.bounded(*done, initial_words, item["language"])
                if self.check(extended, item["language"], cut) and count_words(extended) > count_words(best):
                    current = best = extended
                    self.stats.improved_rounds += 1
                history.append(count_words(best))
            words = count_words(best)
            if words > self.min_growth * initial_words:
                return {"id": attempt_id, "row": {
                    "id": attempt_id, "initial_id": item["id"], "instruction_id": item["instruction_id"],
                    "language": item["language"], "instruction": item["instruction"],
                    "initial": item["response"], "initial_words": initial_words,
                    "response": best, "words": words, "tries": try_no, "round_words": history}}
        return {"id": attempt_id, "row": None}


async def extend_responses(chain: ExtendChain, initial: list[dict], attempts: int, log: SampleLog) -> list[dict]:
    """Accepted extensions, one row per accepted attempt, sorted by id."""

    async def one(item: dict, j: int) -> None:
        log.add(entry := await chain.attempt(item, j))
        progress.advance(entry["id"])

    todo = [(item, j) for item in initial for j in range(attempts) if f"{item['id']}-a{j}" not in log]
    chain.stats.attempts = len(initial) * attempts
    chain.stats.resumed_attempts = len(initial) * attempts - len(todo)
    progress.expect(chain.stats.attempts, done=chain.stats.resumed_attempts)
    await asyncio.gather(*(one(item, j) for item, j in todo))
    rows = [e["row"] for e in sorted(log.values(), key=lambda e: e["id"]) if e["row"] is not None]
    chain.stats.accepted = len(rows)
    return rows


async def extended_rows(settings: schema.Extend, inputs: Inputs) -> tuple[list[dict], dict]:
    """(the kept extensions, tagged "method": "extend"; the statistics), by the extender
    (the base model in iteration 1). The caller (stages/synth.py, `loop.synth`) writes
    extended.jsonl; the stage contract writes the manifest and removes the checkpoint."""
    paths, adapter, check = inputs.paths, inputs.adapter("extender"), QualityCheck(inputs.rules)
    initial = artifacts.read_jsonl(paths.initial)
    chain = ExtendChain(inputs.engine, inputs.sampling, check, settings.retries, settings.rounds, settings.min_growth,
                        adapter, seed=(inputs.seed, "extend", paths.k), max_growth=settings.max_growth,
                        drop_preface=settings.drop_preface)
    log = SampleLog(paths.checkpoint("extend"))
    extended = await extend_responses(chain, initial, settings.attempts, log)
    kept = drop_short(extended, [r["words"] for r in extended],
                      seed=stable_seed(inputs.seed, "extend-drop", paths.k)) if settings.drop_short else extended
    stats = chain.stats
    summary = {**vars(stats), "initial": len(initial), "kept_after_drop_short": len(kept),
               "attempt_accept_rate": round(stats.accepted / stats.attempts, 4) if stats.attempts else None,
               "quality": check.summary(), "adapter": adapter}
    return [{**row, "method": "extend"} for row in kept], summary
