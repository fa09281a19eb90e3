"""Preference pairs from scored samples: pure functions, no engine, no files.

A scored sample is a dict with at least `item` (the instruction's id), `index` (which of
the k samples, 0-based), `response` and `score` (S = (S_l + S_q)/2, or S_l alone without a
judge; None when it could not be scored, e.g. the judge's answer was unparsable).

Pairing, per instruction, over its scored samples:
- "best_vs_worst" (default): one pair, the highest score against the lowest (ties go to
  the earlier sample for the best and the later one for the worst, so the choice is
  deterministic). One pair per instruction keeps every instruction's weight equal.
- "all": every (higher, lower) combination, which gives up to k(k-1)/2 pairs per
  instruction (more signal from the same samples, but correlated pairs).
A pair is kept only when its margin (chosen score - rejected score) is > 0 and
>= `min_margin`, and the two responses differ.

Penalties (`dpo.penalties`, before pairing): a sample's score is multiplied by the RL
rewards named (core/rewards.py, each 0..1): `termination` (0 when the token cap cut the
answer) and `repetition` (1 - its repeated n-gram rate, lower still for a loop the
compression floor catches). Scored by length alone, the longest sample of a long ask
is often one that looped to the cap; penalised, that sample becomes the rejected one.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

from selflengthen.core.rewards import repetition_reward, termination_reward
from selflengthen.core.signals import is_cut

PAIRINGS = ("best_vs_worst", "all")
PENALTIES = ("termination", "repetition")


def penalty(sample: dict, name: str) -> float:
    """One penalty of one sample, 0..1: the RL reward of that name on its response."""
    if name == "termination":
        return termination_reward(not is_cut(sample.get("finish_reason"), sample.get("ended_by") or ""))
    if name == "repetition":
        return repetition_reward(sample.get("response") or "", sample.get("language"))
    raise ValueError(f"unknown penalty {name!r}; choose among {PENALTIES}")


def penalised(samples: list[dict], names: list[str] | tuple[str, ...]) -> list[dict]:
    """The samples with each score multiplied by its penalties (`penalty`, the product; the
    score before it kept as `unpenalised_score`); unscored samples stay unscored. No names:
    the samples as they are."""
    if not names:
        return samples
    out = []
    for s in samples:
        if s.get("score") is None:
            out.append(s)
            continue
        factor = 1.0
        for name in names:
            factor *= penalty(s, name)
        out.append({**s, "score": s["score"] * factor, "unpenalised_score": s["score"], "penalty": factor})
    return out


def group_by_item(samples: list[dict]) -> dict[str, list[dict]]:
    """The scored samples of each instruction (those with a score), by sample index;
    instructions keep their first-seen order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["item"]]  # noqa: B018 - keeps instructions with no scored sample, in order
        if s.get("score") is not None:
            groups[s["item"]].append(s)
    return {item: sorted(group, key=lambda s: s["index"]) for item, group in groups.items()}


def spread(group: list[dict]) -> float | None:
    """Best minus worst score of one instruction's samples (None below 2 scored samples)."""
    if len(group) < 2:
        return None
    scores = [s["score"] for s in group]
    return max(scores) - min(scores)


def _pair(chosen: dict, rejected: dict) -> dict:
    return {"item": chosen["item"], "prompt": chosen["prompt"],
            "chosen": chosen["response"], "rejected": rejected["response"],
            "chosen_index": chosen["index"], "rejected_index": rejected["index"],
            "chosen_score": chosen["score"], "rejected_score": rejected["score"],
            "margin": chosen["score"] - rejected["score"]}


def candidates(group: list[dict], pairing: str) -> list[tuple[dict, dict]]:
    """(chosen, rejected) candidates of one instruction, before the margin filter."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; choose one of {PAIRINGS}")
    if len(group) < 2:
        return []
    if pairing == "best_vs_worst":
        best = max(group, key=lambda s: (s["score"], -s["index"]))
        worst = min(group, key=lambda s: (s["score"], -s["index"]))
        return [(best, worst)]
    out = []
    for a, b in combinations(group, 2):
        if a["score"] != b["score"]:
            out.append((a, b) if a["score"] > b["score"] else (b, a))
    return out


def build_pairs(samples: list[dict], min_margin: float, pairing: str = "best_vs_worst") -> list[dict]:
    """The (chosen, rejected) pairs of every instruction whose margin clears `min_margin`."""
    pairs = []
    for group in group_by_item(samples).values():
        for chosen, rejected in candidates(group, pairing):
            margin = chosen["score"] - rejected["score"]
            if margin > 0 and margin >= min_margin and chosen["response"] != rejected["response"]:
                pairs.append(_pair(chosen, rejected))
    return pairs


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "max": max(values)}


def margin_summary(samples: list[dict], pairs: list[dict], min_margin: float, pairing: str) -> dict:
    """What the pairing saw and kept: per-instruction spreads (best - worst) of all
    instructions, the kept pairs' margins, and the counts behind them."""
    groups = group_by_item(samples)
    spreads = [s for s in (spread(g) for g in groups.values()) if s is not None]
    margins = [p["margin"] for p in pairs]
    return {
        "pairing": pairing,
        "min_margin": min_margin,
        "instructions": len(groups),
        "samples": len(samples),
        "unscored_samples": sum(1 for s in samples if s.get("score") is None),
        "instructions_with_2_scored": len(spreads),
        "instructions_with_pairs": len({p["item"] for p in pairs}),
        "pairs": len(pairs),
        "spread": _stats(spreads),  # best - worst per instruction, pair or not
        "margin": _stats(margins),  # chosen - rejected of the kept pairs
        "chosen_score": _stats([p["chosen_score"] for p in pairs]),
        "rejected_score": _stats([p["rejected_score"] for p in pairs]),
    }


def no_pairs_message(summary: dict, setting: str = "dpo.min_margin") -> str:
    """Why no pair was kept, with the numbers and the setting to change."""
    n, s = summary["instructions"], summary["spread"]
    if s is None:
        return (f"no instruction of {n} has 2 scored samples ({summary['samples']} samples, "
                f"{summary['unscored_samples']} unscored); raise dpo.samples_per_instruction, or check the judge")
    if s["max"] <= 0:
        return (f"no pair: every sample of each of {n} instructions scored the same; raise dpo.temperature or "
                f"dpo.samples_per_instruction for more varied samples")
    seen = f"best-worst score spreads seen: min {s['min']:.1f}, median {s['median']:.1f}, max {s['max']:.1f}"
    return (f"no pair clears {setting}={summary['min_margin']} over {n} instructions ({seen}); lower {setting} "
            f"(e.g. {setting}={max(0.0, round(s['max'] / 2, 1))}), or raise dpo.samples_per_instruction or "
            f"dpo.temperature for more varied samples")
