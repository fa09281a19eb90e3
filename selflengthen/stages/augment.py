"""Stage 1: instruction augmentation by self-instruct (algorithm.md 1.1).

Each candidate comes from a few-shot raw completion: two distinct pool instructions are
placed as items 1 and 2 of a numbered list inside the assistant turn, and the model writes
item 3. A candidate is accepted when it has more than `min_words` and fewer than
`max_words` words, is not a duplicate of anything in the pool, and the judge says yes.
Requests are batched: each round draws one candidate for every instruction still wanted
(within the per-instruction try budget), then judges the survivors in one batch; accepted
instructions join the pool before the next round draws.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig

from selflengthen import artifacts, prompting
from selflengthen.engines import Engine, Request, Sampling
from selflengthen.text import count_words


@dataclass
class AugmentStats:
    drawn: int = 0
    rejected_words: int = 0
    rejected_duplicate: int = 0
    judged: int = 0
    rejected_judge: int = 0
    accepted: int = 0
    rounds: int = 0

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
    stats: AugmentStats = field(default_factory=AugmentStats)

    def augment(self, pool: list[str], wanted: int, language: str, rng: random.Random) -> list[str]:
        """`wanted` new instructions in `language`, grown from (and into) `pool`."""
        if len(pool) < 2:
            raise ValueError("the instruction pool needs at least 2 instructions to draw from")
        pool = list(pool)
        seen = {normalize(p) for p in pool}
        accepted: list[str] = []
        budget = wanted * self.tries_per_instruction
        while len(accepted) < wanted and budget > 0:
            n = min(wanted - len(accepted), budget)
            budget -= n
            self.stats.rounds += 1
            requests = []
            for _ in range(n):
                messages, prefix = prompting.augment_request(rng.sample(pool, 2), language)
                requests.append(Request(messages, prefix=prefix, adapter=self.adapter, seed=rng.getrandbits(31)))
            sampling = self.sampling.with_stops(*prompting.augment_stops(language, 2))
            candidates = [prompting.parse_augmented(t) for t in self.engine.generate(requests, sampling)]
            self.stats.drawn += len(candidates)
            survivors = []
            for cand in candidates:
                if not self.min_words < count_words(cand) < self.max_words:
                    self.stats.rejected_words += 1
                elif normalize(cand) in seen:
                    self.stats.rejected_duplicate += 1
                else:
                    seen.add(normalize(cand))  # also dedups within the round
                    survivors.append(cand)
            if not survivors:
                continue
            verdicts = self.engine.generate(
                [Request(prompting.judge_request(c, language), adapter=self.adapter, seed=rng.getrandbits(31))
                 for c in survivors],
                self.judge_sampling,
            )
            self.stats.judged += len(survivors)
            for cand, verdict in zip(survivors, verdicts):
                if prompting.parse_judgement(verdict) and len(accepted) < wanted:
                    accepted.append(cand)
                    pool.append(cand)
                else:
                    self.stats.rejected_judge += 1
        self.stats.accepted += len(accepted)
        return accepted


def run(cfg: DictConfig, paths: artifacts.IterationPaths, engine: Engine, pool: dict[str, list[str]],
        sampling: Sampling) -> list:
    """Write iter_k/instructions.jsonl: the new instructions of every configured language."""
    started = time.time()
    acfg = cfg.loop.augment
    augmenter = Augmenter(
        engine=engine,
        sampling=sampling.with_max_tokens(acfg.max_tokens),
        judge_sampling=sampling.with_max_tokens(acfg.judge_max_tokens),
        min_words=acfg.min_words,
        max_words=acfg.max_words,
        tries_per_instruction=acfg.tries,
    )
    rows = []
    for language in cfg.model.languages:
        rng = random.Random(f"{cfg.seed}-augment-{paths.k}-{language}")
        new = augmenter.augment(pool[language], acfg.new_per_language, language, rng)
        rows += [{"id": f"i{paths.k}-{language}-{i}", "language": language, "instruction": text}
                 for i, text in enumerate(new)]
    artifacts.write_jsonl(paths.instructions, rows)
    artifacts.write_stage_manifest(
        paths, "augment", started=started, config_digest=artifacts.config_hash(dict(acfg)),
        counts={"instructions": len(rows), **vars(augmenter.stats)}, outputs=[paths.instructions],
        extra={"acceptance": augmenter.stats.rates()},
    )
    return [paths.instructions]
