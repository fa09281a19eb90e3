"""Stage 3: two-stage extension by the extender (algorithm.md 1.3).

One attempt starts from the initial response and runs up to `rounds` rounds:
  Stage 1 (chat): the extender expands the first floor(n/2) paragraphs; only the first
    floor(2m/3) of its m paragraphs are kept (the tail tends to wrap up).
  Stage 2 (prefilled completion): the extender is asked to expand the *whole* current
    response, with its answer already begun by the kept Stage-1 text, so the expanded
    first half is the demonstration and the continuation expands the rest.
  extended = kept text + continuation; it replaces the best when it passes the quality
  check and is longer.
An attempt is accepted when best has more than `min_growth` x the initial words; a failed
attempt is tried again, up to `retries` tries. Every round batches all attempts' Stage-1
requests together, then all Stage-2 requests. Accepted attempts are checkpointed after
every try so an interrupted stage resumes where it stopped.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from selflengthen import artifacts, prompting
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.quality import QualityCheck
from selflengthen.resample import drop_short
from selflengthen.text import count_words, first_half, keep_leading_two_thirds


@dataclass
class Attempt:
    item: dict
    index: int
    current: str = ""
    best: str = ""
    history: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.item['id']}-a{self.index}"

    def restart(self) -> None:
        self.current = self.best = self.item["response"]
        self.history = [count_words(self.best)]


@dataclass
class ExtendStats:
    attempts: int = 0
    tries: int = 0
    stage1_requests: int = 0
    stage2_requests: int = 0
    unsplittable: int = 0
    improved_rounds: int = 0
    accepted: int = 0


def extend_round(engine: Engine, attempts: list[Attempt], sampling: Sampling, check: QualityCheck,
                 rng: random.Random, adapter: str | None, stats: ExtendStats) -> None:
    """One round of both stages over all attempts, batched stage by stage."""
    active = []
    for a in attempts:
        half, taken, _ = first_half(a.current)
        if taken == 0:
            stats.unsplittable += 1
            continue
        active.append((a, half))
    if not active:
        return
    stage1 = engine.generate(
        [Request(prompting.extender_request(a.item["instruction"], half, a.item["language"]),
                 adapter=adapter, seed=rng.getrandbits(31)) for a, half in active],
        sampling,
    )
    stats.stage1_requests += len(active)
    prefixes = []
    for text in stage1:
        kept = keep_leading_two_thirds(text)
        prefixes.append(kept + "\n\n" if kept else "")
    stage2 = engine.generate(
        [Request(prompting.extender_request(a.item["instruction"], a.current, a.item["language"]),
                 prefix=prefix, adapter=adapter, seed=rng.getrandbits(31))
         for (a, _), prefix in zip(active, prefixes)],
        sampling,
    )
    stats.stage2_requests += len(active)
    for (a, _), prefix, continuation in zip(active, prefixes, stage2):
        extended = (prefix + continuation).strip()
        if check(extended, a.item["language"]) and count_words(extended) > count_words(a.best):
            a.current = a.best = extended
            stats.improved_rounds += 1
        a.history.append(count_words(a.best))


def extend_responses(engine: Engine, initial: list[dict], *, attempts: int, retries: int, rounds: int,
                     min_growth: float, sampling: Sampling, check: QualityCheck, rng: random.Random,
                     adapter: str | None, stats: ExtendStats, checkpoint: Path | None = None) -> list[dict]:
    """Accepted extensions, one row per accepted attempt, sorted by id."""
    done = {r["id"]: r for r in (artifacts.read_jsonl(checkpoint) if checkpoint and checkpoint.exists() else [])}
    pending = [Attempt(item, j) for item in initial for j in range(attempts)]
    pending = [a for a in pending if a.id not in done]
    stats.attempts += len(pending) + len(done)
    for attempt_no in range(1, retries + 1):
        if not pending:
            break
        stats.tries += len(pending)
        for a in pending:
            a.restart()
        for _ in range(rounds):
            extend_round(engine, pending, sampling, check, rng, adapter, stats)
        accepted, still = [], []
        for a in pending:
            initial_words = count_words(a.item["response"])
            words = count_words(a.best)
            if words > min_growth * initial_words:
                accepted.append({
                    "id": a.id, "initial_id": a.item["id"], "instruction_id": a.item["instruction_id"],
                    "language": a.item["language"], "instruction": a.item["instruction"],
                    "initial": a.item["response"], "initial_words": initial_words,
                    "response": a.best, "words": words, "tries": attempt_no, "round_words": a.history,
                })
            else:
                still.append(a)
        if checkpoint and accepted:
            artifacts.append_jsonl(checkpoint, accepted)
        done.update({r["id"]: r for r in accepted})
        pending = still
    stats.accepted = len(done)
    return sorted(done.values(), key=lambda r: r["id"])


def run(cfg: DictConfig, paths: artifacts.IterationPaths, engine: Engine, sampling: Sampling,
        check: QualityCheck, adapter: str | None) -> dict:
    """Write iter_k/extended.jsonl; return the stage's statistics."""
    started = time.time()
    ecfg = cfg.loop.extend
    initial = artifacts.read_jsonl(paths.initial)
    rng = random.Random(f"{cfg.seed}-extend-{paths.k}")
    stats = ExtendStats()
    extended = extend_responses(
        engine, initial, attempts=ecfg.attempts, retries=ecfg.retries, rounds=ecfg.rounds,
        min_growth=ecfg.min_growth, sampling=sampling, check=check, rng=rng, adapter=adapter,
        stats=stats, checkpoint=paths.checkpoint("extend"),
    )
    kept = drop_short(extended, [r["words"] for r in extended], seed=rng.getrandbits(32)) \
        if ecfg.drop_short else extended
    artifacts.write_jsonl(paths.extended, kept)
    summary = {**vars(stats), "initial": len(initial), "kept_after_drop_short": len(kept),
               "attempt_accept_rate": round(stats.accepted / stats.attempts, 4) if stats.attempts else None,
               "quality": check.summary(), "adapter": adapter}
    artifacts.write_stage_manifest(paths, "extend", started=started, config_digest=artifacts.config_hash(str(ecfg)),
                                   counts=summary, outputs=[paths.extended])
    paths.checkpoint("extend").unlink(missing_ok=True)  # its rows are in extended.jsonl now
    return summary
