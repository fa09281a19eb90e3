"""Length scores at every branch and boundary (hand-computed), the benchmark summaries,
and a smoke test of each plot."""
from __future__ import annotations

import math

import pytest

from selflengthen.evaluation import plots, scoring
from selflengthen.evaluation.benchmarks import load_items
from selflengthen.evaluation.formulas import LENGTH_BUCKETS, length_bucket, longbench_length_score, longen_score
from selflengthen.evaluation.scoring import prediction_row, summarize


# --- LonGen: window [lo, hi] = [800, 1200] -----------------------------------------------
@pytest.mark.parametrize("words, expected", [
    (1000, 1.0),    # inside
    (800, 1.0),     # exactly at lo: the window is inclusive
    (1200, 1.0),    # exactly at hi
    (799, 2 * 799 / 800 - 1),
    (600, 0.5),     # 2*600/800 - 1
    (400, 0.0),     # half of lo: 2*0.5 - 1 = 0
    (100, 0.0),     # below that: clipped at 0
    (0, 0.0),       # nothing written
    (1201, 3 - 2 * 1201 / 1200),
    (1500, 0.5),    # 3 - 2*1500/1200
    (1800, 0.0),    # 1.5 hi: 3 - 3 = 0
    (5000, 0.0),    # far above: clipped at 0
])
def test_longen_score(words, expected):
    assert longen_score(words, 800, 1200) == pytest.approx(expected, abs=1e-12)


def test_longen_score_on_float_windows_like_the_reference():
    # about 3500 -> [2800.0, 4200.0]; the window edges are products, not literals
    lo, hi = 3500 * 0.8, 3500 * 1.2
    assert longen_score(math.ceil(hi), lo, hi) == pytest.approx(1.0, abs=1e-9)
    assert longen_score(2800, lo, hi) == pytest.approx(1.0, abs=1e-9)


# --- LongBench-Write S_l, required l = 1000 ---------------------------------------------
@pytest.mark.parametrize("output, expected", [
    (1000, 100.0),               # equal
    (1500, 100 * (1 - 0.5 / 3)),  # above: 1 - (1.5 - 1)/3
    (2000, 100 * (1 - 1 / 3)),
    (4000, 0.0),                 # 4x: 1 - 3/3 = 0
    (9000, 0.0),                 # far above: clipped at 0
    (1001, 100 * (1 - 0.001 / 3)),
    (999, 100 * (1 - (1000 / 999 - 1) / 2)),
    (500, 50.0),                 # below: 1 - (2 - 1)/2
    (400, 100 * (1 - 1.5 / 2)),
    (1000 / 3, 0.0),             # a third: 1 - 2/2 = 0
    (100, 0.0),                  # far below: clipped at 0
    (0, 0.0),                    # nothing written: no division by zero
])
def test_longbench_length_score(output, expected):
    assert longbench_length_score(1000, output) == pytest.approx(expected, abs=1e-9)


def test_longbench_length_score_matches_the_formula_on_a_grid():
    for required in (1, 7, 100, 999, 20000):
        for output in range(1, 5 * required + 3, max(1, required // 40)):
            ratio = output / required
            formula = 100 * max(0, 1 - (ratio - 1) / 3) if ratio > 1 else 100 * max(0, 1 - (1 / ratio - 1) / 2)
            assert longbench_length_score(required, output) == pytest.approx(formula, abs=1e-6)
    with pytest.raises(ValueError):
        longbench_length_score(0, 10)


@pytest.mark.parametrize("required, bucket", [(0, "[0,500)"), (100, "[0,500)"), (499, "[0,500)"),
                                              (500, "[500,2k)"), (1999, "[500,2k)"), (2000, "[2k,4k)"),
                                              (3999, "[2k,4k)"), (4000, "[4k,20k]"), (20000, "[4k,20k]")])
def test_length_buckets(required, bucket):
    assert length_bucket(required) == bucket
    assert [b[0] for b in LENGTH_BUCKETS] == ["[0,500)", "[500,2k)", "[2k,4k)", "[4k,20k]"]


def test_prediction_rows_use_each_benchmarks_counter():
    text = "你好，世界。 Hello, x-ray 2024"
    longen_item = {"id": "longen-0000", "language": "zh", "type": "about", "range": "2-4k", "window": (8, 12)}
    row = prediction_row("longen", longen_item, text)
    assert row["words"] == 9 and row["length_score"] == 1.0  # 4 ideographs + ， + 。 + 3 tokens
    bench_item = {"id": "longbench_write-0000", "language": "zh", "type": "t", "length": 7}
    row = prediction_row("longbench_write", bench_item, text)
    assert row["words"] == 7 and row["length_score"] == 100.0  # 4 ideographs + hello, x, ray
    assert row["response"] == text and row["id"] == "longbench_write-0000"


def _longen_row(language, kind, rng, score):
    return {"language": language, "type": kind, "range": rng, "words": 1000, "length_score": score}


def test_summarize_longen():
    rows = [_longen_row("en", "about", "2-4k", 1.0), _longen_row("en", "below", "4-6k", 0.5),
            _longen_row("zh", "about", "4-6k", 0.0), _longen_row("zh", "range", "2-4k", 0.5)]
    rows[0]["quality"], rows[0]["judge"] = 8.0, {"relevance": 8}
    summary = summarize("longen", rows)
    scores = summary["length_score"]
    assert summary["items"] == 4 and summary["mean_words"] == 1000
    assert scores["overall"] == 0.5
    assert scores["by_type"] == {"about": 0.5, "range": 0.5, "below": 0.5}
    assert list(scores["by_type"]) == ["about", "range", "below"]  # the paper's order
    assert scores["by_range"] == {"2-4k": 0.75, "4-6k": 0.25}
    assert scores["by_language"] == {"en": 0.75, "zh": 0.25}
    assert scores["by_language_type_range"] == {"en": {"about": {"2-4k": 1.0}, "below": {"4-6k": 0.5}},
                                                "zh": {"about": {"4-6k": 0.0}, "range": {"2-4k": 0.5}}}
    assert summary["quality"] == {"overall": 8.0, "judged": 1, "by_type": {"about": 8.0},
                                  "by_dimension": {"relevance": 8.0}, "by_segment": None}
    assert summary["total"] is None and summary["by_length"] is None


def test_summarize_longbench_with_and_without_judge():
    rows = [{"language": "en", "type": "News", "length": 300, "words": 300, "length_score": 100.0},
            {"language": "zh", "type": "Poem", "length": 3000, "words": 1500, "length_score": 50.0}]
    plain = summarize("longbench_write", rows)
    assert plain["length_score"] == {"overall": 75.0, "by_bucket": {"[0,500)": 100.0, "[2k,4k)": 50.0},
                                     "by_type": {"News": 100.0, "Poem": 50.0},
                                     "by_language": {"en": 100.0, "zh": 50.0}}
    assert plain["quality"] is None and plain["total"] is None and plain["mean_words"] == 900
    rows[0]["quality"], rows[1]["quality"] = 75.0, 25.0  # S_q per item
    judged = summarize("longbench_write", rows)
    assert judged["quality"]["overall"] == 50.0 and judged["quality"]["judged"] == 2
    assert judged["total"] == (75.0 + 50.0) / 2


def test_summarize_ruler_and_heldout():
    rows = [{"language": "en", "type": "t", "length": 1000, "words": w, "length_score": 0.0} for w in (500, 1500)]
    rows.append({"language": "zh", "type": "t", "length": 30000, "words": 9000, "length_score": 0.0})
    summary = summarize("ruler", rows)
    assert summary["by_length"] == {"1000": {"items": 2, "mean_words": 1000, "max_words": 1500},
                                    "30000": {"items": 1, "mean_words": 9000, "max_words": 9000}}
    assert "by_bucket" not in summary["length_score"] and summary["quality"] is None
    heldout = [prediction_row("heldout_tiny", item, "word " * item["length"]) for item in load_items("heldout_tiny")]
    assert summarize("heldout_tiny", heldout)["length_score"]["overall"] == pytest.approx(100.0)
    empty = summarize("longen", [])
    assert empty["items"] == 0 and empty["mean_words"] is None and empty["length_score"] is None


def test_plots_write_pngs(tmp_path):
    bench = [{"language": lang, "type": "t", "length": n, "words": w}
             for lang, n, w in [("en", 100, 120), ("zh", 2000, 0), ("en", 20000, 8000)]]
    ruler = [{"language": lang, "type": "t", "length": n, "words": w}
             for lang, n, w in [("en", 1000, 900), ("en", 1000, 1300), ("zh", 30000, 7000), ("zh", 2000, 0)]]
    longen = summarize("longen", [_longen_row("en", "about", "2-4k", 1.0), _longen_row("zh", "below", "6-8k", 0.3),
                                  _longen_row("zh", "above", "2-4k", 0.7)])
    paths = [plots.plot_longbench(bench, tmp_path / "a" / "longbench.png"),
             plots.plot_ruler(ruler, tmp_path / "ruler.png"),
             plots.plot_longen(longen, tmp_path / "longen.png")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plots.plot_longbench([], tmp_path / "empty.png")


def test_not_writing_counts_bare_verdicts_empty_and_capped_responses():
    rows = [{"response": "no"}, {"response": " Yes.\n"}, {"response": "否"}, {"response": "  "},
            {"response": "No one writes the json module's docs twice.", "finish_reason": "stop"},
            {"response": "A long text that ran out of", "finish_reason": "length"}]
    assert scoring.not_writing(rows) == {"verdict": 3, "empty": 1, "cut": 1}
    summary = scoring.summarize("heldout_tiny", [scoring.prediction_row("heldout_tiny", {"prompt": "p", "type": "t",
                                                                                       "length": 50, "language": "en"}, "no")])
    assert summary["not_writing"] == {"verdict": 1, "empty": 0, "cut": 0}


def test_summaries_carry_judge_free_quality_signals_recomputable_from_the_predictions():
    from selflengthen.core import signals

    varied = "The json module reads and writes JSON text. It maps objects to dicts and arrays to lists."
    looping = " ".join(["The json module reads JSON text."] * 12)
    item = {"prompt": "p", "type": "t", "length": 50, "language": "en"}
    rows = [{**scoring.prediction_row("heldout_tiny", item, text), "finish_reason": finish}
            for text, finish in ((varied, "stop"), (looping, "length"))]
    got = scoring.summarize("heldout_tiny", rows)["signals"]
    alone = [signals.text_signals(t, "en", f) for t, f in ((varied, "stop"), (looping, "length"))]
    assert got["distinct_4"] == pytest.approx((alone[0]["distinct_4"] + alone[1]["distinct_4"]) / 2)
    assert got["texts"] == 2 and got["ended_cap"] == 1 and got["cap_rate"] == 0.5
    assert alone[1]["repeated_ngram_rate"] > alone[0]["repeated_ngram_rate"] == 0
    assert {f"distinct_4_seg{i}" for i in (1, 2, 3, 4)} <= set(got)
