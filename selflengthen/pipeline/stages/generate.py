"""Stage 2: initial responses from the generator (algorithm.md 1.2).

`samples` independent samples per instruction. Each sample is its own chain: draw, run
the quality check of its instruction's language, draw again on failure, up to `retries`
tries. All chains are in flight together, so a sample that needs a retry does not wait
for the rest of the batch and the engine's batch stays full. Each finished sample is
checkpointed at once. Survivors then pass length-biased resampling.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from selflengthen.config import schema
from selflengthen.core import progress, prompting, signals
from selflengthen.core.quality import QualityCheck
from selflengthen.core.resample import drop_short
from selflengthen.core.text import count_words
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts
from selflengthen.store.samples import SampleLog, stable_seed


@dataclass
class GenerateChain:
    """How one sample is drawn: the same for every sample of the stage."""

    engine: Engine
    sampling: Sampling
    check: QualityCheck
    retries: int
    adapter: str | None
    seed: object  # the stage's identity (run seed, iteration): per-sample seeds derive from it

    async def sample(self, row: dict, j: int) -> dict:
        """One sample's chain; returns its checkpoint entry (`row` is None when every try failed)."""
        sample_id = f"{row['id']}-s{j}"
        first_words = None
        for attempt in range(1, self.retries + 1):
            if attempt > 1:
                progress.retry(sample_id)
            request = Request(prompting.generator_request(row["instruction"]), adapter=self.adapter,
                              seed=stable_seed(self.seed, sample_id, attempt), key=sample_id)
            done = await self.engine.complete(request, self.sampling)
            text, words = done.text, count_words(done.text)
            if first_words is None:
                first_words = words
            if self.check(text, row["language"], cut=signals.is_cut(done.finish_reason, done.ended_by)):
                return {"id": sample_id, "first_try_words": first_words, "tries": attempt,
                        "row": {"id": sample_id, "instruction_id": row["id"], "language": row["language"],
                                "instruction": row["instruction"], "response": text.strip(), "words": words,
                                "tries": attempt}}
        return {"id": sample_id, "first_try_words": first_words, "tries": self.retries, "row": None}


async def sample_responses(chain: GenerateChain, instructions: list[dict], samples: int,
                           log: SampleLog) -> tuple[list[dict], list[int]]:
    """Quality-checked responses (one row per surviving sample, sorted by id) and the word
    counts of every sample's first try (the generator's unfiltered length curve)."""

    async def one(row: dict, j: int) -> None:
        log.add(entry := await chain.sample(row, j))
        progress.advance(entry["id"])

    todo = [(row, j) for row in instructions for j in range(samples) if f"{row['id']}-s{j}" not in log]
    progress.expect(len(instructions) * samples, done=len(instructions) * samples - len(todo))
    await asyncio.gather(*(one(row, j) for row, j in todo))
    entries = sorted(log.values(), key=lambda e: e["id"])
    rows = [e["row"] for e in entries if e["row"] is not None]
    return rows, [e["first_try_words"] for e in entries]


async def run(settings: schema.Generate, inputs: Inputs) -> Output:
    """Write iter_k/initial.jsonl, with the generator (the base model in iteration 1)."""
    paths, adapter, check = inputs.paths, inputs.adapter("generator"), QualityCheck(inputs.rules)
    instructions = artifacts.read_jsonl(paths.instructions)
    log = SampleLog(paths.checkpoint("generate"))
    resumed = len(log.done)
    chain = GenerateChain(inputs.engine, inputs.sampling, check, settings.retries, adapter,
                          seed=(inputs.seed, "generate", paths.k))
    responses, first_try = await sample_responses(chain, instructions, settings.samples, log)
    kept = drop_short(responses, [r["words"] for r in responses],
                      seed=stable_seed(inputs.seed, "generate-drop", paths.k)) if settings.drop_short else responses
    artifacts.write_jsonl(paths.initial, kept)
    tries = [e["tries"] for e in log.values()]
    stats = {"instructions": len(instructions), "samples_wanted": len(instructions) * settings.samples,
             "passed_quality": len(responses), "kept_after_drop_short": len(kept),
             "requests": sum(tries), "resumed_samples": resumed,
             "quality": check.summary(), "adapter": adapter}
    return Output(counts=stats, outputs=[paths.initial], extra={"first_try_words": first_try},
                  checkpoints=("generate",))


STAGE = Stage("generate", unit="sample", settings=lambda s: s.loop.generate,
              body=run, engine=True, writes=("initial.jsonl",))
