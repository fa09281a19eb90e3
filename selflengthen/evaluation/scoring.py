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

from collections import defaultdict
from operator import itemgetter
from statistics import median

from selflengthen.core import signals
from selflengthen.evaluation.benchmarks import Benchmark, get_benchmark
from selflengthen.evaluation.formulas import mean, means

def length_score(bench: Benchmark, item: dict, words: int) -> float:
    """The benchmark's own length score for an item answered with `words` words."""
    return bench.length_score(item, words)


def prediction_row(bench: Benchmark | str, item: dict, response: str) -> dict:
    """The item with the model's response, its word count and its length score."""
    bench = get_benchmark(bench) if isinstance(bench, str) else bench
    words = bench.counter(response)
    return {**item, "response": response, "words": words, "length_score": length_score(bench, item, words)}


def _quality(rows: list[dict]) -> dict | None:
    judged = [r for r in rows if r.get("quality") is not None]
    if not judged:
        return None
    dims: dict[str, list[float]] = defaultdict(list)
    for row in judged:
        for dim, score in (row.get("judge") or {}).items():
            dims[dim].append(score)
    by_part: dict[int, list[float]] = defaultdict(list)  # the segment rubric's score per part of the responses
    for row in judged:
        for i, score in enumerate(row.get("segment_quality") or []):
            if score is not None:
                by_part[i + 1].append(score)
    return {"overall": mean(map(itemgetter("quality"), judged)), "judged": len(judged),
            "by_type": means(judged, itemgetter("type"), itemgetter("quality")),
            "by_dimension": {d: mean(v) for d, v in dims.items()},
            "by_segment": [mean(by_part[i]) for i in sorted(by_part)] or None}


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
    - every benchmark: items, mean_words, median_words, not_writing {verdict, empty, cut}, signals (judge-free
      quality, response_signals), length_score {overall, ...};
    - longen: length_score by_type, by_range, by_language, by_language_type_range
      (language -> type -> range -> mean), scale 0..1; quality (1..10) when judged;
    - longbench_write(_en), heldout_tiny, heldout_writing: S_l by_bucket, by_type, by_language
      (0..100); when judged, quality = S_q {overall, judged, by_type, by_dimension (raw 1..5
      means)} and total S = (S_l + S_q) / 2 (the benchmark's `total`);
    - ruler: by_length (required length -> items, mean_words, max_words); S_l without buckets.
    quality, total and by_length are None where they do not apply."""
    bench = get_benchmark(bench) if isinstance(bench, str) else bench
    rows = list(rows)
    summary: dict = {"benchmark": bench.name, "items": len(rows), "mean_words": mean(r["words"] for r in rows),
                     "median_words": median([r["words"] for r in rows]) if rows else None,
                     "not_writing": not_writing(rows), "signals": response_signals(rows), "length_score": None, "quality": None, "total": None, "by_length": None}
    if not rows:
        return summary
    summary["length_score"] = bench.length_summary(rows)
    summary["by_length"] = bench.by_length(rows)
    if bench.rubric is not None:
        summary["quality"] = _quality(rows)
    summary["total"] = bench.total(summary["length_score"], summary["quality"])
    return summary
