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
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

PAIRINGS = ("best_vs_worst", "all")


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
