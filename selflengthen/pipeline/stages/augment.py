"""Stage 1: instruction augmentation by self-instruct (algorithm.md 1.1).

Each candidate comes from a few-shot raw completion: two distinct pool instructions are
placed as items 1 and 2 of a numbered list inside the assistant turn, and the model writes
item 3. A candidate is accepted when it has more than `min_words` and fewer than
`max_words` words, is not a duplicate of anything in the pool, and the judge says yes.

Every wanted instruction is a chain of its own (draw -> bounds -> dedup -> judge, up to
`tries` candidates), all in flight together; an accepted instruction joins the pool at
once, so chains that draw later can use it. Each finished chain is checkpointed.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from selflengthen.config import schema
from selflengthen.core import progress, prompting
from selflengthen.core.text import count_words
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts
from selflengthen.store.samples import SampleLog, sample_rng, stable_seed


@dataclass
class AugmentStats:
    drawn: int = 0
    rejected_words: int = 0
    rejected_duplicate: int = 0
    judged: int = 0
    rejected_judge: int = 0
    accepted: int = 0
    resumed: int = 0

    def rates(self) -> dict:
        return {
            "word_bounds_pass": _rate(self.drawn - self.rejected_words, self.drawn),
            "dedup_pass": _rate(self.drawn - self.rejected_words - self.rejected_duplicate,
                                self.drawn - self.rejected_words),
            "judge_pass": _rate(self.judged - self.rejected_judge, self.judged),
            "overall": _rate(self.accepted, self.drawn),
        }


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def normalize(instruction: str) -> str:
    """Key for exact-duplicate detection: case and whitespace folded."""
    return " ".join(instruction.lower().split())


@dataclass
class Augmenter:
    engine: Engine
    sampling: Sampling
    judge_sampling: Sampling
    min_words: int
    max_words: int
    tries_per_instruction: int
    adapter: str | None = None
    seed: object = 0
    stats: AugmentStats = field(default_factory=AugmentStats)

    async def candidate(self, pool: list[str], language: str, slot_id: str, try_no: int) -> str:
        examples = sample_rng(self.seed, slot_id, try_no).sample(pool, 2)
        messages, prefix = prompting.augment_request(examples, language)
        request = Request(messages, prefix=prefix, adapter=self.adapter, seed=stable_seed(self.seed, slot_id, try_no),
                          key=slot_id)
        sampling = self.sampling.with_stops(*prompting.augment_stops(language, 2))
        return prompting.parse_augmented((await self.engine.complete(request, sampling)).text)

    async def judge(self, candidate: str, language: str, slot_id: str, try_no: int) -> bool:
        request = Request(prompting.judge_request(candidate, language), adapter=self.adapter,
                          seed=stable_seed(self.seed, slot_id, try_no, "judge"), key=slot_id)
        return prompting.parse_judgement((await self.engine.complete(request, self.judge_sampling)).text)

    async def one(self, pool: list[str], seen: set[str], language: str, slot_id: str) -> str | None:
        """One wanted instruction's chain: up to `tries_per_instruction` candidates."""
        for try_no in range(1, self.tries_per_instruction + 1):
            if try_no > 1:
                progress.retry(slot_id)
            cand = await self.candidate(pool, language, slot_id, try_no)
            self.stats.drawn += 1
            if not self.min_words < count_words(cand) < self.max_words:
                self.stats.rejected_words += 1
                continue
            if normalize(cand) in seen:
                self.stats.rejected_duplicate += 1
                continue
            seen.add(normalize(cand))  # also keeps a concurrent chain from proposing it again
            self.stats.judged += 1
            if await self.judge(cand, language, slot_id, try_no):
                pool.append(cand)
                self.stats.accepted += 1
                return cand
            self.stats.rejected_judge += 1
        return None

    async def augment(self, pool: list[str], wanted: int, language: str, id_prefix: str,
                      log: SampleLog | None = None) -> list[dict]:
        """`wanted` chains of new instructions in `language`, grown from (and into) `pool`;
        rows {id, language, instruction} of the accepted ones, by slot."""
        if len(pool) < 2:
            raise ValueError("the instruction pool needs at least 2 instructions to draw from")
        log = log or SampleLog(None)
        pool = list(pool)
        slots = [f"{id_prefix}-{i}" for i in range(wanted)]
        for sid in slots:
            if sid in log and log.done[sid]["instruction"]:
                pool.append(log.done[sid]["instruction"])
                self.stats.resumed += 1
        seen = {normalize(p) for p in pool}

        async def chain(sid: str) -> None:
            log.add({"id": sid, "instruction": await self.one(pool, seen, language, sid)})
            progress.advance(sid, accepted=self.stats.accepted)

        progress.expect(len(slots), done=sum(sid in log for sid in slots))
        await asyncio.gather(*(chain(sid) for sid in slots if sid not in log))
        return [{"id": sid, "language": language, "instruction": log.done[sid]["instruction"]}
                for sid in slots if log.done[sid]["instruction"]]


async def run(settings: schema.Augment, inputs: Inputs) -> Output:
    """Write iter_k/instructions.jsonl: the new instructions of every configured language,
    grown from the instruction pool (the seeds and every earlier iteration's instructions)."""
    paths, sampling = inputs.paths, inputs.sampling
    augmenter = Augmenter(
        engine=inputs.engine,
        sampling=sampling.with_max_tokens(settings.max_tokens),
        judge_sampling=sampling.with_max_tokens(settings.judge_max_tokens),
        min_words=settings.min_words,
        max_words=settings.max_words,
        tries_per_instruction=settings.tries,
        seed=(inputs.seed, "augment", paths.k),
    )
    log = SampleLog(paths.checkpoint("augment"))
    per_language = await asyncio.gather(*(
        augmenter.augment(inputs.pool[language], settings.new_per_language, language, f"i{paths.k}-{language}", log)
        for language in inputs.languages))
    rows = [row for rows in per_language for row in rows]
    artifacts.write_jsonl(paths.instructions, rows)
    return Output(counts={"instructions": len(rows), **vars(augmenter.stats)}, outputs=[paths.instructions],
                  extra={"acceptance": augmenter.stats.rates()}, checkpoints=("augment",))


STAGE = Stage("augment", unit="instr", settings=lambda s: s.loop.augment,
              body=run, engine=True, writes=("instructions.jsonl",))
