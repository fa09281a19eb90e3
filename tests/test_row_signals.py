"""Per-row signals (issue 40, must-have 7): every predictions.jsonl row an evaluation writes
carries its words, its ending and its judge-free quality signals, and `inspect` names the
newest evaluation's most repetitive answers below its table -- also for a run whose
predictions were written before rows carried the signals. Literal texts, no engine."""
from __future__ import annotations

from pathlib import Path

from selflengthen.commands import inspect
from selflengthen.core import signals
from selflengthen.evaluation import in_run, runner, scoring
from selflengthen.evaluation.benchmarks import get_benchmark, load_items
from selflengthen.store import artifacts

BENCH = "heldout_tiny"
VARIED = ("The json module turns Python dictionaries and lists into text and back again. Its dumps function "
          "writes a string, while dump writes straight to an open file; loads and load read them. Keys must be "
          "strings, and sets or dates need a custom encoder before they can be written.")
LOOPED = "The json module is useful. " + "It reads and writes JSON data for you every day. " * 12
CUT = ("Decorators wrap a function in another one, so logging, caching or timing can be added without "
       "touching the body of the function they wrap, and")


def answered(texts_and_finishes: list[tuple[str, str | None]]) -> list[dict]:
    """The first items of the shipped benchmark, answered with the given texts and finish reasons."""
    items = load_items(BENCH, limit=len(texts_and_finishes))
    return [{**scoring.prediction_row(BENCH, item, text), "finish_reason": finish, "completion_tokens": 1}
            for item, (text, finish) in zip(items, texts_and_finishes, strict=True)]


def test_each_predictions_row_carries_its_words_ending_and_signals_and_the_looped_one_ranks_worst(tmp_path):
    rows = answered([(VARIED, "stop"), (LOOPED, "stop"), (CUT, "length"), ("", "stop")])
    paths = runner.EvalPaths(tmp_path / "eval" / BENCH)
    runner.write_results(paths, get_benchmark(BENCH), rows, {})
    written = {row["id"]: row for row in artifacts.read_jsonl(paths.predictions)}
    varied, looped, cut, empty = (written[row["id"]] for row in rows)

    assert [r["ending"] for r in (varied, looped, cut, empty)] == ["eos", "eos", "cap", "empty"]
    assert looped["words"] == len(LOOPED.split()) and empty["words"] == 0
    for row, text in ((varied, VARIED), (looped, LOOPED), (cut, CUT)):
        expected = signals.text_signals(text, "en")
        for key in scoring.ROW_SIGNALS:
            assert row[key] is not None and abs(row[key] - expected[key]) < 1e-4, (key, row[key], expected[key])
    assert empty["repeated_ngram_rate"] is None and empty["compression_ratio"] is None
    assert varied["repeated_ngram_rate"] == 0.0 and looped["repeated_ngram_rate"] > 0.5
    by_rep = sorted(written.values(), key=lambda r: -(r["repeated_ngram_rate"] or 0))
    by_zip = sorted((r for r in written.values() if r["compression_ratio"] is not None),
                    key=lambda r: r["compression_ratio"])
    assert by_rep[0]["id"] == by_zip[0]["id"] == looped["id"]
    # the summary's set signals are the same function's, over the same rows
    summary = artifacts.read_json(paths.summary)
    assert summary["signals"]["ended_cap"] == 1.0


def make_run(root: Path, *, with_fields: bool) -> artifacts.RunPaths:
    """A run with the base model's evaluation (iteration 0) and iteration 1's; the newest
    holds one looped answer among varied ones. with_fields=False: predictions.jsonl as
    written before rows carried signals (no ending, no signal fields)."""
    paths = artifacts.RunPaths(root)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("run:\n  name: demo\n")
    bench = get_benchmark(BENCH)
    for k, texts in ((0, [(VARIED, "stop"), (CUT, "length")]),
                     (1, [(VARIED, "stop"), (LOOPED, "length"), (CUT, "length"), ("", "stop")])):
        out = runner.EvalPaths(in_run.eval_dir(paths, k, BENCH))
        rows = answered(texts)
        if with_fields:
            runner.write_results(out, bench, rows, {"iteration": k})
        else:
            artifacts.write_jsonl(out.predictions, rows)
            artifacts.write_json(out.summary, {**scoring.summarize(bench, rows), "iteration": k})
    return paths


def worst_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("most repetitive answers"))
    return [line for line in lines[start + 1 :] if line.startswith("  ")]


def test_inspect_names_the_newest_evaluations_most_repetitive_answers(tmp_path):
    make_run(tmp_path / "iterations" / "demo", with_fields=True)
    text, _ = inspect.inspect_runs(["demo"], tmp_path / "iterations")
    named = worst_block(text)
    assert len(named) == inspect.WORST  # the empty answer is not among them
    looped_id = load_items(BENCH, limit=2)[1]["id"]
    first = named[0]
    assert f"{BENCH} {looped_id} (iter 1)" in first and "ending cap" in first
    assert first.endswith(f'"{inspect.excerpt(LOOPED)}"') and first.endswith('for you every day."')  # its end: the loop
    assert text.index("most repetitive answers") > text.index("(mean words per response")  # after the table


def test_inspect_reads_predictions_written_before_rows_carried_signals(tmp_path):
    old = make_run(tmp_path / "iterations" / "old", with_fields=False)
    new = make_run(tmp_path / "new", with_fields=True)
    text, _ = inspect.inspect_runs(["old"], tmp_path / "iterations")
    assert worst_block(text) == worst_block(inspect.inspect_runs([str(new.root)], tmp_path)[0])
    assert "ending" not in artifacts.read_jsonl(runner.EvalPaths(in_run.eval_dir(old, 1, BENCH)).predictions)[0]
