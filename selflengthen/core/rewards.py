"""The RL rewards (issue 40), each a pure function of one answer, and their aggregation.

- length: LongWriter-Zero's piecewise shape over the answer's words (text.count_words: a
  CJK character is a word) and the query's window [lo, up]: 1 inside, words/lo below,
  falling linearly from 1 at up to 0 at a ceiling above (a setting: ceiling_factor x up).
  The window is read by `row_window` from the row itself (core/lengths.py).
- termination: 1 when the answer ended on the end-of-turn token, 0 when cut at the cap.
- repetition: from signals.repetition, the measure the evaluation reports: 1 - the
  repeated n-gram rate, scaled down by window_compression / loop_floor when some window
  compresses below the loop floor (a loop of a few characters the n-gram rule misses).
- quality: pluggable in training/grpo.py (none, the evaluation's judge served behind an
  OpenAI-compatible endpoint: evaluation/judge_reward.py, or a sequence-classification model).

Aggregation, TRL's multi_objective_aggregation="normalize_then_sum": each reward is
normalised within its group of answers to one prompt ((r - mean) / (std + 1e-4), the
sample std), the weighted sum taken, and that sum normalised over the batch. Or
"multiply": the product of the rewards (weights as exponents) is the one reward, normalised
in its group and over the batch the same way, so an answer cut at the cap (termination 0)
earns nothing for its length: the rule `dpo.penalties` applies to DPO's scores.
`advantages` does either in plain Python so a test can rank answers without the trainer.
"""
from __future__ import annotations

import math

from selflengthen.core import lengths
from selflengthen.core.errors import UserError
from selflengthen.core.signals import repetition
from selflengthen.core.text import count_words

NAMES = ("length", "termination", "repetition", "quality")
EPS = 1e-4  # TRL's, in the denominators
ROW_FORMS = (f"{lengths.PROMPT_FORMS}, a LonGen 'constraint' field (with its 'type'), 'lower' and 'upper' "
             "fields (words), or a LongBench-Write 'length' field")


def length_reward(words: float, lo: float, up: float, ceiling_factor: float = 2.0) -> float:
    """1 for lo <= words <= up; words / lo below; above, (ceiling - words) / (ceiling - up)
    down to 0 at ceiling = ceiling_factor x up (at least up + 1 word)."""
    if words < lo:
        return words / lo if lo > 0 else 1.0
    if words <= up:
        return 1.0
    ceiling = max(ceiling_factor * up, up + 1.0)
    return max(0.0, (ceiling - words) / (ceiling - up))


def termination_reward(ended: bool) -> float:
    """1 when the answer ended on its own (end-of-turn), 0 when the cap cut it."""
    return 1.0 if ended else 0.0


def repetition_reward(text: str, language: str | None = None, loop_floor: float = 0.3) -> float:
    """1 - repeated n-gram rate, times window_compression / loop_floor where that is below 1
    (signals.repetition; a text too short for an n-gram counts as not repeating). An empty
    answer scores 0."""
    if not text.strip():
        return 0.0
    rep = repetition(text, language)
    rate = rep["repeated_ngram_rate"] or 0.0
    return (1.0 - rate) * min(1.0, rep["window_compression"] / loop_floor)


def prompt_text(row: dict) -> str:
    """The prompt of a row as text: `prompt` (text, or chat messages: the last user turn),
    else `query`, else `instruction`."""
    prompt = row.get("prompt", row.get("query", row.get("instruction", "")))
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else ""
    return prompt if isinstance(prompt, str) else ""


def _positive(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def row_window(row: dict) -> tuple[float, float] | None:
    """The word window a row asks for, or None: a LonGen `constraint` field (its `type`
    wins over the wording), else a length stated in the prompt (lengths.prompt_window), else
    `lower`/`upper`, else LongBench-Write's `length` L as the window [0.8 L, 1.2 L]."""
    if isinstance(row.get("constraint"), str):
        kind = row.get("type") if row.get("type") in lengths.LONGEN_KINDS else None
        try:
            return lengths.constraint_window(row["constraint"], kind)
        except ValueError:
            pass
    found = lengths.prompt_window(prompt_text(row))
    if found:
        return found
    lower, upper = row.get("lower"), row.get("upper")
    if lower is not None and upper is not None and not isinstance(lower, bool):
        up = _positive(upper)
        lo = 0.0 if lower in (0, "0") else _positive(lower)
        if lo is not None and up is not None and lo <= up:
            return lo, up
    length = _positive(row.get("length"))
    return lengths.window_of("about", [length]) if length else None


def windows_or_refuse(rows: list[dict], where: str) -> list[tuple[float, float]]:
    """Each row's window; the first row without one is a UserError naming it and the forms
    accepted (before any work)."""
    out = []
    for i, row in enumerate(rows):
        found = row_window(row)
        if found is None:
            text = prompt_text(row)
            raise UserError(f"{where} row {i + 1} ({text[:60]!r}) states no length the reward can read; give "
                            f"each row {ROW_FORMS}")
        out.append(found)
    return out


def answer_length_reward(text: str, window: tuple[float, float], ceiling_factor: float = 2.0) -> float:
    """length_reward of an answer's text (count_words) against its window."""
    return length_reward(count_words(text), window[0], window[1], ceiling_factor)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group_normalised(values: list[float]) -> list[float]:
    """(v - mean) / (std + EPS) within one group (the sample std; 0 for a group of one)."""
    mean = sum(values) / len(values)
    std = _std(values)
    return [(v - mean) / (std + EPS) for v in values]


def multiplied(values: list[float | None], weights: list[float]) -> float | None:
    """One answer's rewards as one: the product of each reward raised to its weight (a weight
    of 0 leaves a reward out, 2 counts it twice); a reward that could not be scored (None,
    e.g. a judgement that never parsed) is left out; None when none was scored."""
    scored = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w != 0]
    if not scored:
        return None
    return math.prod(max(0.0, v) ** w for v, w in scored)


def advantages(rewards: dict[str, list[float]], weights: dict[str, float], group_size: int,
               aggregation: str = "normalize_then_sum") -> list[float]:
    """The advantages of a batch of consecutive groups of group_size answers. normalize_then_sum:
    per reward, normalise within each group; weighted sum; normalise the sums over the batch.
    multiply: the weighted product per answer (`multiplied`) as the one reward, then the same."""
    if aggregation == "multiply":
        names = list(rewards)
        product = [multiplied(list(row), [weights.get(n, 1.0) for n in names]) or 0.0
                   for row in zip(*(rewards[n] for n in names), strict=True)]
        return advantages({"product": product}, {"product": 1.0}, group_size)
    total = None
    for name, values in rewards.items():
        assert len(values) % group_size == 0, (name, len(values), group_size)
        normed = [x for g in range(0, len(values), group_size) for x in group_normalised(values[g:g + group_size])]
        weighted = [weights.get(name, 1.0) * x for x in normed]
        total = weighted if total is None else [a + b for a, b in zip(total, weighted, strict=True)]
    assert total is not None, "no rewards"
    mean = sum(total) / len(total)
    std = _std(total)
    return [(t - mean) / (std + EPS) for t in total]
