"""The benchmarks' formulas (algorithm.md 3.1-3.3), pure functions a reader can check against
the papers line by line: LonGen's window score, LongBench-Write's S_l and its length
buckets, and the means the summaries report (overall and per group)."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from operator import itemgetter

from selflengthen.core.lengths import LONGEN_KINDS

# LongBench-Write's required-length buckets as its paper reports them: [lo, hi) words.
# The paper names the last one [4k, 20k); its data reaches 20,000, so it is closed here.
LENGTH_BUCKETS = (("[0,500)", 0, 500), ("[500,2k)", 500, 2000), ("[2k,4k)", 2000, 4000),
                  ("[4k,20k]", 4000, math.inf))


def longen_score(words: float, lo: float, hi: float) -> float:
    """LonGen's length-following score of g = `words` for the window [lo, hi] (inclusive):
    1 inside; max(2g/lo - 1, 0) below; max(3 - 2g/hi, 0) above. The operations run in
    the reference's order, so results match it exactly."""
    if lo <= words <= hi:
        return 1.0
    if words < lo:
        return max(words / lo * 2 - 1, 0.0)
    return max(3 - words / hi * 2, 0.0)


def longbench_length_score(required: float, output: float) -> float:
    """LongBench-Write's S_l for a required length l and an output length l':
    100 * max(0, 1 - (l'/l - 1)/3) when l' > l, else 100 * max(0, 1 - (l/l' - 1)/2).
    An empty output scores 0 (the limit of the formula; the reference divides by zero)."""
    if required <= 0:
        raise ValueError(f"required length must be positive, got {required}")
    if output <= 0:
        return 0.0
    if output > required:
        return 100 * max(0.0, 1.0 - (output / required - 1) / 3)
    return 100 * max(0.0, 1.0 - (required / output - 1) / 2)


def length_bucket(required: float) -> str:
    """The label of the LongBench-Write bucket that holds a required length."""
    for label, lo, hi in LENGTH_BUCKETS:
        if lo <= required < hi:
            return label
    raise ValueError(f"required length must be non-negative, got {required}")


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def score(row: dict) -> float:
    return row["length_score"]


def means(rows: list[dict], key, value=score, order: Iterable = ()) -> dict:
    """Mean of value(row) per key(row): the keys named in `order` first, in that order,
    then any others sorted."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[key(row)].append(value(row))
    first = [k for k in order if k in groups]
    return {k: mean(groups[k]) for k in first + sorted(set(groups) - set(first))}


def summarize_longen(rows: list[dict]) -> dict:
    grid = {}  # language -> type -> range -> mean score
    for language in sorted({r["language"] for r in rows}):
        in_language = [r for r in rows if r["language"] == language]
        kinds = means(in_language, itemgetter("type"), order=LONGEN_KINDS)  # for their order
        grid[language] = {kind: means([r for r in in_language if r["type"] == kind], itemgetter("range"))
                          for kind in kinds}
    return {"overall": mean(map(score, rows)),
            "by_type": means(rows, itemgetter("type"), order=LONGEN_KINDS),
            "by_range": means(rows, itemgetter("range")),
            "by_language": means(rows, itemgetter("language")),
            "by_language_type_range": grid}


def summarize_longbench(rows: list[dict]) -> dict:
    return {"overall": mean(map(score, rows)),
            "by_bucket": means(rows, lambda r: length_bucket(r["length"]), order=[b[0] for b in LENGTH_BUCKETS]),
            "by_type": means(rows, itemgetter("type")),
            "by_language": means(rows, itemgetter("language"))}


def by_required_length(rows: list[dict]) -> dict:
    """Per required length (keys as strings, ascending): items, mean and max output words."""
    out = {}
    for length in sorted({r["length"] for r in rows}):
        words = [r["words"] for r in rows if r["length"] == length]
        out[str(length)] = {"items": len(words), "mean_words": mean(words), "max_words": max(words)}
    return out
