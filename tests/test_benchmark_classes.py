"""Adding a benchmark is one class: its row format, length score, summary and plot live on
it, and loading, scoring and reporting run through any registered one unchanged. The
shipped benchmarks keep their formats."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from selflengthen.evaluation import benchmarks, scoring
from selflengthen.evaluation.benchmarks import BENCHMARKS, Benchmark, LonGen, LongBenchWrite, Ruler


@dataclass(frozen=True)
class Exact(LongBenchWrite):
    """A made-up benchmark on LongBench-Write's rows: full marks only for exactly the
    required length, no judge."""

    rubric: str | None = None

    def length_score(self, item: dict, words: int) -> float:
        return 100.0 if words == item["length"] else 0.0

    def length_summary(self, rows: list[dict]) -> dict:
        return {"overall": sum(r["length_score"] for r in rows) / len(rows), "exact": sum(r["length_score"] == 100
                                                                                             for r in rows)}

    def plot(self, rows: list[dict], summary: dict, out: Path) -> Path:
        out.write_text(json.dumps(summary["length_score"]))
        return out


def test_a_new_benchmark_is_one_class(tmp_path, monkeypatch):
    data = tmp_path / "exact.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Write {n} words.", "type": "t", "length": n}) for n in (3, 4)),
                    encoding="utf-8")
    monkeypatch.setitem(BENCHMARKS, "exact", Exact("exact", "exact.jsonl"))
    items = benchmarks.load_items("exact", data)
    assert [i["length"] for i in items] == [3, 4] and items[0]["id"] == "exact-0000"
    rows = [scoring.prediction_row("exact", items[0], "one two three"), scoring.prediction_row("exact", items[1], "a")]
    summary = scoring.summarize("exact", rows)
    assert summary["length_score"] == {"overall": 50.0, "exact": 1} and summary["quality"] is None
    assert BENCHMARKS["exact"].plot(rows, summary, tmp_path / "p.json").read_text() == '{"overall": 50.0, "exact": 1}'


def test_the_shipped_benchmarks_and_their_classes():
    assert isinstance(BENCHMARKS["longen"], LonGen) and isinstance(BENCHMARKS["ruler"], Ruler)
    assert all(isinstance(b, Benchmark) for b in BENCHMARKS.values())
    assert {n for n, b in BENCHMARKS.items() if type(b) is LongBenchWrite} == {
        "longbench_write", "longbench_write_en", "heldout_tiny", "heldout_writing",
        "heldout_writing_large"}
    assert [n for n, b in BENCHMARKS.items() if not b.asks_a_length] == ["longen"]
    assert BENCHMARKS["ruler"].rubric is None and BENCHMARKS["longen"].rubric == "longen"
    ruler_rows = [{"length": 100, "words": 50, "length_score": 50.0, "type": "t", "language": "en"}]
    assert "by_bucket" not in BENCHMARKS["ruler"].length_summary(ruler_rows)
    assert BENCHMARKS["ruler"].by_length(ruler_rows) == {"100": {"items": 1, "mean_words": 50, "max_words": 50}}
