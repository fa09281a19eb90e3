"""The judge-free quality signals shown wherever the lengths are (issue 29), on small
hand-made run folders: `inspect`'s table and plot (one run, and a sweep's overlay), the
segment plot of each benchmark, and the trackers' metrics. Every number is recomputed from
the rows the run folder holds (extended.jsonl, predictions.jsonl), not from metrics.json."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from selflengthen.commands import inspect
from selflengthen.core import signals
from selflengthen.evaluation import in_run, runner, scoring
from selflengthen.pipeline.metrics import kept_signals, length_stats
from selflengthen.store import artifacts
from selflengthen.tracking import iteration_metrics
from tests.fakes import tracker_of

SENTENCES = ["The ferry left at dawn and the gulls followed it past the breakwater.",
             "Maria counted the crates twice before she signed the ledger.",
             "Fog lifted from the cliffs, and the lighthouse stood white against the blue.",
             "Tourists asked about storms, wrecks and the smugglers' caves below the town.",
             "By evening the nets were dry, folded, and stacked beside the harbour wall."]
BENCH = "heldout_tiny"
ITEM = {"prompt": "Write about a harbour.", "type": "story", "length": 60, "language": "en"}


def response(k: int, j: int) -> str:
    """Iteration k's j-th text: varied at first, then more and more of one sentence repeated."""
    return " ".join(SENTENCES[(j + i) % 5] for i in range(5)) + " " + " ".join([SENTENCES[j]] * (2 * k))


def make_run(root: Path, iterations: int = 2) -> artifacts.RunPaths:
    """A finished-looking run: per iteration extended.jsonl and a metrics.json written with
    the product's own functions; per iteration and the base model (0), an evaluation."""
    paths = artifacts.RunPaths(root)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("run:\n  name: demo\n")
    for k in range(1, iterations + 1):
        it = paths.iteration(k)
        rows = [{"response": response(k, j), "language": "en", "words": len(response(k, j).split()),
                 "initial_words": 40} for j in range(3)]
        artifacts.write_jsonl(it.extended, rows)
        stats = length_stats([r["words"] for r in rows])
        artifacts.write_json(it.metrics, {
            "iteration": k, "counts": {"instructions": 3},
            "words": {"generator_first_try": stats, "initial": stats, "extended": stats, "growth_ratio": stats},
            "acceptance": {"generate_quality": 1.0, "extend_attempts": 0.5}, "training": {},
            "tokens": {"tokens_per_second": 10.0}, "seconds": {"generate": 1.0},
            "signals": {"initial": kept_signals(rows), "extended": kept_signals(rows)}})
        artifacts.write_json(it.manifest, {"iteration": k, "complete": True})
    for k in range(0, iterations + 1):
        out = runner.EvalPaths(in_run.eval_dir(paths, k, BENCH))
        predictions = [{**scoring.prediction_row(BENCH, ITEM, response(k + 1, j)),
                        "finish_reason": "length" if j == 0 else "stop"} for j in range(2)]
        artifacts.write_jsonl(out.predictions, predictions)
        artifacts.write_json(out.summary, {**scoring.summarize(BENCH, predictions), "iteration": k})
    return paths


def recomputed(rows: list[dict]) -> dict:
    """The set's signals straight from its rows (not from any file's summary)."""
    return signals.aggregate([r["response"] for r in rows], [r.get("language") for r in rows],
                             [r.get("finish_reason") for r in rows])


def parse_table(text: str, label: str | None = None) -> list[dict[str, str]]:
    """Rows of inspect's table as {column: cell}, the columns found by the dashed rule."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line) == {"-", " "} and line.startswith("-"))
    spans, start = [], None
    for i, ch in enumerate(lines[rule] + " "):
        if ch == "-" and start is None:
            start = i
        elif ch == " " and start is not None:
            spans.append((start, i))
            start = None
    head = [lines[rule - 1][a:b].strip() for a, b in spans]
    out = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith("("):
            break
        out.append(dict(zip(head, (line[a:b].strip() for a, b in spans))))
    return out


def quality(cell: str) -> list[float]:
    return [float(v) for v in cell.split("/")]


def expected(s: dict) -> list:
    return [pytest.approx(s["distinct_3"], abs=5e-3), pytest.approx(s["repeated_ngram_rate"], abs=5e-4),
            pytest.approx(s["compression_ratio"], abs=5e-3)]


def png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def check_table(text: str, paths: artifacts.RunPaths) -> None:
    rows = parse_table(text)
    assert [r["iter"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["ext d3/rep/zip"] == "-"  # iteration 0 is the base model: evaluated only
    for row in rows[1:]:
        kept = artifacts.read_jsonl(paths.iteration(int(row["iter"])).extended)
        assert quality(row["ext d3/rep/zip"]) == expected(recomputed(kept))
        assert row["initial"].startswith(f"{sum(r['words'] for r in kept) / 3:.0f} ")  # the lengths still there
    for row in rows:
        predictions = artifacts.read_jsonl(runner.EvalPaths(in_run.eval_dir(paths, int(row["iter"]), BENCH)).predictions)
        assert quality(row[f"{BENCH} d3/rep/zip"]) == expected(recomputed(predictions))
        assert row[f"{BENCH} words"] == f"{sum(r['words'] for r in predictions) / 2:.0f}"
        assert row[f"{BENCH} verdict/empty/cut"] == "0/0/1"


def test_inspect_shows_each_length_beside_its_signals_and_plots_them(tmp_path):
    paths = make_run(tmp_path / "iterations" / "demo")
    text, png = inspect.inspect_runs(["demo"], tmp_path / "iterations")
    check_table(text, paths)
    assert "d3/rep/zip = judge-free quality" in text
    assert png == paths.plot and png_width(png) == 3 * 6 * 120  # lengths, held-out, quality: three panels
    series = {name: (ks, values) for name, ks, values in inspect.quality_series(
        [("demo", inspect.load_metrics(paths), in_run.load(paths))])}
    ks, values = series["extended (kept)"]
    assert ks == [1, 2]
    for k, d3 in zip(ks, values["distinct_3"]):
        assert d3 == pytest.approx(recomputed(artifacts.read_jsonl(paths.iteration(k).extended))["distinct_3"])
    ks, values = series[f"{BENCH} (held-out)"]
    assert ks == [0, 1, 2]
    rates = [recomputed(artifacts.read_jsonl(runner.EvalPaths(in_run.eval_dir(paths, k, BENCH)).predictions))[
        "repeated_ngram_rate"] for k in ks]
    assert values["repeated_ngram_rate"] == pytest.approx(rates) and rates == sorted(rates)  # worse each iteration


def test_a_run_from_before_the_signals_keeps_its_table_and_plot(tmp_path):
    paths = make_run(tmp_path / "old", iterations=1)
    m = artifacts.read_json(paths.iteration(1).metrics)
    del m["signals"]
    artifacts.write_json(paths.iteration(1).metrics, m)
    for k in (0, 1):
        summary = runner.EvalPaths(in_run.eval_dir(paths, k, BENCH)).summary
        artifacts.write_json(summary, {key: v for key, v in artifacts.read_json(summary).items() if key != "signals"})
    text, png = inspect.inspect_runs([str(paths.root)], tmp_path)
    rows = parse_table(text)
    assert {r["ext d3/rep/zip"] for r in rows} == {r[f"{BENCH} d3/rep/zip"] for r in rows} == {"-"}
    assert png_width(png) == 2 * 6 * 120 and "signals by segment" not in text  # no quality panel, no segments


def test_segment_plot_per_benchmark_from_the_summaries_per_segment_aggregates(tmp_path):
    paths = make_run(tmp_path / "demo")
    text, _ = inspect.inspect_runs([str(paths.root)], tmp_path)
    out = paths.segment_plot(BENCH)
    assert f"signals by segment: {out}" in text
    assert out.read_bytes()[:4] == b"\x89PNG" and png_width(out) == 3 * 5 * 120  # a panel per signal
    for k in (0, 1, 2):  # summary.json carries the per-segment means the plot draws, one line per iteration
        eval_paths = runner.EvalPaths(in_run.eval_dir(paths, k, BENCH))
        texts = [r["response"] for r in artifacts.read_jsonl(eval_paths.predictions)]
        drawn = signals.segment_series(in_run.load(paths)[k][BENCH]["signals"], "distinct_3")
        by_hand = [[signals.text_signals(piece, "en")["distinct_3"] for piece in signals.segments(t, 4)]
                   for t in texts]
        assert drawn == pytest.approx([sum(col) / len(col) for col in zip(*by_hand)])
        assert len(drawn) == 4  # K = 4 by default


def test_a_sweeps_overlay_shows_every_runs_signals(tmp_path):
    sweep = tmp_path / "iterations" / "demo-sweep-seed"
    runs = [make_run(sweep / "seed=0"), make_run(sweep / "seed=1", iterations=1)]
    text, png = inspect.inspect_runs(["demo-sweep-seed"], tmp_path / "iterations")
    assert text.startswith("2 runs under") and png == sweep / "compare_length_curves.png"
    tables = text.split("\n\n")
    for table, paths in zip(tables, runs):
        rows = parse_table(table)
        assert {r["run"] for r in rows} == {paths.root.name}
        for row in rows[1:]:
            kept = artifacts.read_jsonl(paths.iteration(int(row["iter"])).extended)
            assert quality(row["ext d3/rep/zip"]) == expected(recomputed(kept))
    assert png_width(png) == 3 * 6 * 120
    loaded = [(p.root.name, inspect.load_metrics(p), in_run.load(p)) for p in runs]
    names = [name for name, _, _ in inspect.quality_series(loaded)]
    assert names == ["seed=0: extended (kept)", f"seed=0: {BENCH} (held-out)", "seed=1: extended (kept)",
                     f"seed=1: {BENCH} (held-out)"]
    assert all(paths.segment_plot(BENCH).exists() for paths in runs)


class Recorder:
    """A tracker backend that keeps what it is given."""

    name = "recorder"

    def __init__(self):
        self.logged: dict[int, dict[str, float]] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.logged.setdefault(step, {}).update(metrics)


def test_trackers_record_the_signals_beside_the_lengths(tmp_path, compose_config):
    paths = make_run(tmp_path / "demo")
    tracker = tracker_of(compose_config("tracking=tensorboard"), paths.root)
    recorder = Recorder()
    tracker.opened, tracker.backends = True, [recorder]  # no TensorBoard: the recorder stands in
    tracker.log_finished(paths, in_run.load(paths))
    for k in (1, 2):
        kept = recomputed(artifacts.read_jsonl(paths.iteration(k).extended))
        got = recorder.logged[k]
        assert "iteration/words/extended/mean" in got
        for key in ("distinct_3", "repeated_ngram_rate", "compression_ratio"):
            assert got[f"iteration/signals/extended/{key}"] == pytest.approx(kept[key])
        assert got["iteration/signals/extended/distinct_3_seg4"] == pytest.approx(
            signals.aggregate_by_segment([r["response"] for r in artifacts.read_jsonl(paths.iteration(k).extended)],
                                         4, ["en"] * 3)["distinct_3_seg4"])
        assert iteration_metrics(paths.iteration(k)).items() <= got.items()
    for k in (0, 1, 2):
        predictions = artifacts.read_jsonl(runner.EvalPaths(in_run.eval_dir(paths, k, BENCH)).predictions)
        got, want = recorder.logged[k], recomputed(predictions)
        assert got[f"eval/{BENCH}/mean_words"] == pytest.approx(sum(r["words"] for r in predictions) / 2)
        assert got[f"eval/{BENCH}/signals/distinct_3"] == pytest.approx(want["distinct_3"])
        assert got[f"eval/{BENCH}/signals/cap_rate"] == 0.5


def test_with_a_judge_the_table_shows_quality_and_total_beside_the_length_score():
    """Judged quality per iteration (S_q, and S = (S_l + S_q) / 2) beside S_l: the
    length-vs-quality trade-off in one table; unjudged runs keep their columns."""
    evals = {0: {"heldout_tiny": {"mean_words": 100.0, "length_score": 40.0, "quality": 70.0, "total": 55.0,
                                  "not_writing": {"verdict": 0, "empty": 0, "cut": 1}}},
             1: {"heldout_tiny": {"mean_words": 180.0, "length_score": 60.0, "quality": 50.0, "total": 55.0,
                                  "not_writing": {"verdict": 0, "empty": 0, "cut": 2}}}}
    lines = inspect.table([], evals).splitlines()
    head = lines[0].split("  ")
    head = [h.strip() for h in head if h.strip()]
    assert head[-3:] == ["heldout_tiny quality", "heldout_tiny total", "heldout_tiny verdict/empty/cut"]
    assert lines[2].split()[-3:] == ["70.00", "55.00", "0/0/1"] and lines[3].split()[-3:] == ["50.00", "55.00", "0/0/2"]
    unjudged = {k: {"heldout_tiny": {**v["heldout_tiny"], "quality": None, "total": None}} for k, v in evals.items()}
    assert "quality" not in inspect.table([], unjudged).splitlines()[0].replace("judge-free", "")
