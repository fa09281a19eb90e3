"""Length scores and benchmark summaries (algorithm.md 3.1-3.3), pure functions that a
reader can check against the papers line by line.

A prediction row is one item of `benchmarks.load_items` plus what the model did:
  response      str    the model's text
  words         int    its length by the benchmark's own counter
  length_score  float  LonGen: 0..1 (1 inside the window); the others: S_l, 0..100
  judge         dict   optional: the parsed judge scores, dimension -> score
  quality       float  optional: LonGen: mean of the 7 criteria, 1..10;
                       LongBench-Write rubric: S_q, 0..100
The item fields the summaries read: `language` and `type` always; LonGen `range` and
`window` = (lo, hi); the others `length` (required words).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from operator import itemgetter

from selflengthen.core import signals
from selflengthen.evaluation.benchmarks import Benchmark, LONGEN_KINDS, get_benchmark

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


def length_score(bench: Benchmark, item: dict, words: int) -> float:
    """The benchmark's own length score for an item answered with `words` words."""
    if bench.target == "window":
        lo, hi = item["window"]
        return longen_score(words, lo, hi)
    return longbench_length_score(item["length"], words)


def prediction_row(bench: Benchmark | str, item: dict, response: str) -> dict:
    """The item with the model's response, its word count and its length score."""
    bench = get_benchmark(bench) if isinstance(bench, str) else bench
    words = bench.counter(response)
    return {**item, "response": response, "words": words, "length_score": length_score(bench, item, words)}


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _score(row: dict) -> float:
    return row["length_score"]


def _means(rows: list[dict], key, value=_score, order: Iterable = ()) -> dict:
    """Mean of value(row) per key(row): the keys named in `order` first, in that order,
    then any others sorted."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[key(row)].append(value(row))
    first = [k for k in order if k in groups]
    return {k: _mean(groups[k]) for k in first + sorted(set(groups) - set(first))}


def _quality(rows: list[dict]) -> dict | None:
    judged = [r for r in rows if r.get("quality") is not None]
    if not judged:
        return None
    dims: dict[str, list[float]] = defaultdict(list)
    for row in judged:
        for dim, score in (row.get("judge") or {}).items():
            dims[dim].append(score)
    return {"overall": _mean(map(itemgetter("quality"), judged)), "judged": len(judged),
            "by_type": _means(judged, itemgetter("type"), itemgetter("quality")),
            "by_dimension": {d: _mean(v) for d, v in dims.items()}}


def _summarize_longen(rows: list[dict]) -> dict:
    grid = {}  # language -> type -> range -> mean score
    for language in sorted({r["language"] for r in rows}):
        in_language = [r for r in rows if r["language"] == language]
        kinds = _means(in_language, itemgetter("type"), order=LONGEN_KINDS)  # for their order
        grid[language] = {kind: _means([r for r in in_language if r["type"] == kind], itemgetter("range"))
                          for kind in kinds}
    return {"overall": _mean(map(_score, rows)),
            "by_type": _means(rows, itemgetter("type"), order=LONGEN_KINDS),
            "by_range": _means(rows, itemgetter("range")),
            "by_language": _means(rows, itemgetter("language")),
            "by_language_type_range": grid}


def _summarize_longbench(rows: list[dict]) -> dict:
    return {"overall": _mean(map(_score, rows)),
            "by_bucket": _means(rows, lambda r: length_bucket(r["length"]), order=[b[0] for b in LENGTH_BUCKETS]),
            "by_type": _means(rows, itemgetter("type")),
            "by_language": _means(rows, itemgetter("language"))}


def _by_required_length(rows: list[dict]) -> dict:
    """Per required length (keys as strings, ascending): items, mean and max output words."""
    out = {}
    for length in sorted({r["length"] for r in rows}):
        words = [r["words"] for r in rows if r["length"] == length]
        out[str(length)] = {"items": len(words), "mean_words": _mean(words), "max_words": max(words)}
    return out


# A bare judge verdict is no piece of writing: a model that falls back on the judge task it
# was taught (the augment filter's yes/no) answers a writing prompt with one of these.
VERDICTS = frozenset({"yes", "no", "是", "否", "是的", "不是"})


def not_writing(rows: list[dict]) -> dict:
    """How many responses are no writing at all, by kind: a bare judge verdict, empty, or
    cut at the token cap (finish_reason "length"; rows of a rerun that lack it count as not
    cut). The held-out words are only a measure of writing when these are few."""
    def verdict(text: str) -> bool:
        return text.strip().strip(".!。！\"'").strip().lower() in VERDICTS

    texts = [r["response"] for r in rows if "response" in r]
    return {"verdict": sum(map(verdict, texts)), "empty": sum(not t.strip() for t in texts),
            "cut": sum(r.get("finish_reason") == "length" for r in rows)}


def response_signals(rows: list[dict]) -> dict:
    """Judge-free quality of the responses (core/signals.py): distinct-n, repeated n-gram
    rate, compression ratio, words and how each ended, over the set and per quarter of
    each response."""
    rows = [r for r in rows if "response" in r]
    return signals.set_summary([r["response"] for r in rows], [r.get("language") for r in rows],
                               [r.get("finish_reason") for r in rows])


def summarize(bench: Benchmark | str, rows: list[dict]) -> dict:
    """The benchmark's report over prediction rows (means over all rows given):
    - every benchmark: items, mean_words, not_writing {verdict, empty, cut}, signals (judge-free
      quality, response_signals), length_score {overall, ...};
    - longen: length_score by_type, by_range, by_language, by_language_type_range
      (language -> type -> range -> mean), scale 0..1; quality (1..10) when judged;
    - longbench_write(_en), heldout_tiny: S_l by_bucket, by_type, by_language (0..100);
      when judged, quality = S_q {overall, judged, by_type, by_dimension (raw 1..5 means)}
      and total S = (S_l + S_q) / 2;
    - ruler: by_length (required length -> items, mean_words, max_words); S_l without buckets.
    quality, total and by_length are None where they do not apply."""
    bench = get_benchmark(bench) if isinstance(bench, str) else bench
    rows = list(rows)
    summary: dict = {"benchmark": bench.name, "items": len(rows), "mean_words": _mean(r["words"] for r in rows),
                     "not_writing": not_writing(rows), "signals": response_signals(rows), "length_score": None, "quality": None, "total": None, "by_length": None}
    if not rows:
        return summary
    if bench.target == "window":
        summary["length_score"] = _summarize_longen(rows)
    else:
        summary["length_score"] = _summarize_longbench(rows)
    if bench.rubric is not None:
        summary["quality"] = _quality(rows)
    if bench.rubric == "longbench" and summary["quality"] is not None:
        summary["total"] = (summary["length_score"]["overall"] + summary["quality"]["overall"]) / 2
    if bench.name == "ruler":  # its lengths reach 30,000: LongBench-Write's buckets do not fit
        summary["by_length"] = _by_required_length(rows)
        del summary["length_score"]["by_bucket"]
    return summary
