"""Stage 2: initial responses from the generator (algorithm.md 1.2).

`samples` independent samples per instruction; a sample that fails the quality check of
its instruction's language is drawn again, up to `retries` tries. All pending samples go
to the engine in one batch per try. Survivors then pass length-biased resampling.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from omegaconf import DictConfig

from selflengthen import artifacts, prompting
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.quality import QualityCheck
from selflengthen.resample import drop_short
from selflengthen.text import count_words


def sample_responses(engine: Engine, instructions: list[dict], samples: int, retries: int,
                     sampling: Sampling, check: QualityCheck, rng: random.Random,
                     adapter: str | None, checkpoint: Path | None = None) -> tuple[list[dict], list[int]]:
    """Quality-checked responses (one row per surviving sample) and the word counts of
    every first-try sample (the generator's unfiltered length, for the length curve).
    With a checkpoint, each try's results are appended to it and a rerun resumes."""
    saved = artifacts.read_jsonl(checkpoint) if checkpoint and checkpoint.exists() else []
    done: list[dict] = [r["row"] for r in saved if "row" in r]
    first_try_words: list[int] = [w for r in saved for w in r.get("first_try_words", [])]
    finished = {r["id"] for r in done}
    pending = [(row, j) for row in instructions for j in range(samples) if f"{row['id']}-s{j}" not in finished]
    start = 2 if first_try_words else 1  # the first try already happened before the restart
    for attempt in range(start, retries + 1):
        if not pending:
            break
        requests = [Request(prompting.generator_request(row["instruction"]), adapter=adapter,
                            seed=rng.getrandbits(31)) for row, _ in pending]
        outputs = engine.generate(requests, sampling)
        words = [count_words(t) for t in outputs]
        still, new_rows = [], []
        for (row, j), text, n in zip(pending, outputs, words):
            if check(text, row["language"]):
                new_rows.append({"id": f"{row['id']}-s{j}", "instruction_id": row["id"], "language": row["language"],
                                 "instruction": row["instruction"], "response": text.strip(),
                                 "words": n, "tries": attempt})
            else:
                still.append((row, j))
        first = words if attempt == 1 else []
        first_try_words += first
        if checkpoint:
            artifacts.append_jsonl(checkpoint, [{"row": r} for r in new_rows] +
                                   ([{"first_try_words": first}] if first else []))
        done += new_rows
        pending = still
    done.sort(key=lambda r: r["id"])
    return done, first_try_words


def run(cfg: DictConfig, paths: artifacts.IterationPaths, engine: Engine, sampling: Sampling,
        check: QualityCheck, adapter: str | None) -> dict:
    """Write iter_k/initial.jsonl; return the stage's statistics."""
    started = time.time()
    gcfg = cfg.loop.generate
    instructions = artifacts.read_jsonl(paths.instructions)
    rng = random.Random(f"{cfg.seed}-generate-{paths.k}")
    responses, first_try = sample_responses(engine, instructions, gcfg.samples, gcfg.retries,
                                            sampling, check, rng, adapter, checkpoint=paths.checkpoint("generate"))
    kept = drop_short(responses, [r["words"] for r in responses], seed=rng.getrandbits(32)) \
        if gcfg.drop_short else responses
    artifacts.write_jsonl(paths.initial, kept)
    stats = {"instructions": len(instructions), "samples_wanted": len(instructions) * gcfg.samples,
             "passed_quality": len(responses), "kept_after_drop_short": len(kept),
             "first_try_words": first_try, "quality": check.summary(), "adapter": adapter}
    artifacts.write_stage_manifest(
        paths, "generate", started=started, config_digest=artifacts.config_hash(str(gcfg)),
        counts={k: v for k, v in stats.items() if k != "first_try_words"}, outputs=[paths.initial],
        extra={"first_try_words": first_try},
    )
    paths.checkpoint("generate").unlink(missing_ok=True)  # its rows are in initial.jsonl now
    return stats
