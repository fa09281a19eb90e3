"""`python -m selflengthen eval` through the real CLI: scoring a predictions file (no
model), and generating on the tiny model with real vLLM for a few items of each benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from selflengthen.core.text import count_words, count_words_longwriter
from selflengthen.evaluation.benchmarks import load_items
from selflengthen.evaluation.formulas import longbench_length_score, longen_score
from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli

DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the public benchmark files (../shared/data) are not here")


def _eval(tmp_path, *args, **kw):
    return run_cli("eval", f"out_dir={tmp_path / 'eval'}", *args, cwd=REPO, **kw)


@needs_data
def test_scoring_a_predictions_file_made_elsewhere(tmp_path):
    rows = [json.loads(line) for line in (DATA / "longbench_write.jsonl").read_text().splitlines()[:4]]
    rows[0]["response"] = "word " * rows[0]["length"]  # exactly the required length
    rows[1]["response"] = ""  # an empty answer scores 0, never a crash
    rows[2]["response"] = "这是中文" * 50
    # rows[3] has no response at all
    pred = tmp_path / "preds.jsonl"
    pred.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    proc = _eval(tmp_path, "benchmark=longbench_write", f"predictions={pred}", "name=mine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "eval" / "mine"
    scored = artifacts.read_jsonl(out / "predictions.jsonl")
    assert [r["length_score"] for r in scored[:2]] == [100.0, 0.0] and scored[3]["length_score"] == 0.0
    assert scored[2]["words"] == count_words_longwriter(rows[2]["response"]) == 200
    assert scored[2]["length_score"] == pytest.approx(longbench_length_score(rows[2]["length"], 200))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 4 and summary["length_score"]["overall"] == pytest.approx(
        sum(r["length_score"] for r in scored) / 4)
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "longbench_write: 4 items" in proc.stdout


def test_a_bad_predictions_file_is_one_line(tmp_path):
    pred = tmp_path / "preds.jsonl"
    pred.write_text('{"prompt": "x", "type": "t", "length": 100, "response": "a"}\nnot json\n')
    proc = _eval(tmp_path, "benchmark=longbench_write", f"predictions={pred}")
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


BENCHMARKS = ["longen", "longbench_write_en", "ruler", "heldout_tiny"]


@pytest.mark.slow
@needs_data
def test_eval_generates_every_benchmark_on_one_engine_start(tmp_path, model_cache, tiny_model):
    """All four benchmarks in one command (one engine start; the packaged heldout_tiny is
    found although data= names the shared folder), each scored with its own counter, sampling
    and token accounting, in its own folder."""
    args = [f"benchmark=[{','.join(BENCHMARKS)}]", "limit=2", "max_tokens=96", "languages=[en]",
            f"paths.cache_dir={model_cache}", f"data={DATA}", "name=all"]
    proc = _eval(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = proc.stdout + proc.stderr
    assert logged.count("eval: vllm engine up in") == 1 and "for 4 benchmarks" in logged  # one engine start
    saved = {}
    for benchmark in BENCHMARKS:
        out = tmp_path / "eval" / f"all-{benchmark}"
        rows = artifacts.read_jsonl(out / "predictions.jsonl")
        summary = json.loads((out / "summary.json").read_text())
        assert len(rows) == summary["items"] == 2 and summary["benchmark"] == benchmark
        for row in rows:  # the benchmark's own counter and scorer, on what the model wrote
            assert row["language"] == "en" and row["completion_tokens"] <= 96
            if benchmark == "longen":
                assert row["words"] == count_words(row["response"])
                assert row["length_score"] == pytest.approx(longen_score(row["words"], *row["window"]))
            else:
                assert row["words"] == count_words_longwriter(row["response"])
                assert row["length_score"] == pytest.approx(longbench_length_score(row["length"], row["words"]))
        assert summary["sampling"]["max_tokens_used"] == 96
        if benchmark in ("longbench_write_en", "ruler"):
            assert summary["sampling"]["temperature"] == 0.5  # LongWriter's own inference setting
        assert summary["generation_usage"]["base"]["requests"] == 2  # this benchmark's requests only
        packaged = benchmark == "heldout_tiny"  # not in the shared folder: the package's own file
        assert (DATA.name in summary["sampling"]["data_file"]) != packaged, summary["sampling"]["data_file"]
        assert f"{benchmark}: 2 items" in proc.stdout
        saved[benchmark] = rows
    # a rerun skips what is already predicted: the same predictions, no engine needed
    again = _eval(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "engine up in" not in again.stdout + again.stderr
    for benchmark in BENCHMARKS:
        out = tmp_path / "eval" / f"all-{benchmark}"
        assert artifacts.read_jsonl(out / "predictions.jsonl") == saved[benchmark]
        assert json.loads((out / "summary.json").read_text())["resumed"] is True


def test_an_unset_benchmark_and_a_missing_data_file_are_one_line_before_any_model_work(tmp_path):
    proc = _eval(tmp_path, "benchmark=null")
    assert proc.returncode == 2 and "benchmark= is not set" in proc.stderr and "Traceback" not in proc.stderr
    proc = _eval(tmp_path, "benchmark=[ruler,heldout_tiny]", f"data={tmp_path / 'nowhere'}",
                 f"paths.cache_dir={tmp_path / 'empty-cache'}")  # an empty cache: any model work would build one
    assert proc.returncode == 2 and "no such file" in proc.stderr and "ruler" in proc.stderr.lower()
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())


def test_several_benchmarks_need_a_folder_and_one_predictions_benchmark(tmp_path):
    one_file = tmp_path / "one.jsonl"
    one_file.write_text('{"prompt": "x", "type": "t", "length": 100, "response": "a"}\n')
    proc = _eval(tmp_path, "benchmark=[ruler,longbench_write]", f"data={one_file}")
    assert proc.returncode == 2 and "give the folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = _eval(tmp_path, "benchmark=[ruler,longbench_write]", f"predictions={one_file}")
    assert proc.returncode == 2 and "holds one benchmark's rows" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_judge_that_writes_no_json_is_recorded_never_fatal(tmp_path, model_cache, tiny_model):
    """The tiny model as its own judge (judge=vllm, offline): it cannot write the rubric's
    JSON, so every item is re-asked judge.retries times, then recorded as unparsable."""
    proc = _eval(tmp_path, "benchmark=heldout_tiny", "limit=2", "max_tokens=64", f"paths.cache_dir={model_cache}",
                 "judge=vllm", f"judge.model={tiny_model}", "judge.max_model_len=4096", "judge.retries=2",
                 "judge.max_tokens=48", "judge.dtype=float32", "name=judged")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "eval" / "judged"
    rows = artifacts.read_jsonl(out / "predictions.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    answered = [r for r in rows if r["response"].strip()]
    assert all(r["judge"] is None and r["judge_tries"] == 2 for r in answered)
    assert summary["judge"]["unparsable"] == len(answered)
    # the judge is asked about every non-empty answer (whether the tiny model wrote any is its own)
    assert summary["judge"]["rubric"] == "longbench" and (summary["judge"]["prompt_tokens"] > 0) == bool(answered)
    # each answer is asked about whole and in its judge.segments=4 parts, each up to judge.retries=2 times
    assert all(all(q is None for q in r.get("segment_quality") or []) for r in answered)
    assert summary["judge"]["completion_tokens"] <= 2 * 48 * len(answered) * (1 + 4)


def test_several_answers_per_item_are_each_asked_and_all_counted(tmp_path, model_cache, tiny_model):
    """eval samples=2: every item answered twice on its own (two requests, two rows with their
    own ids), and the summary's means are over all the answers; a rerun reuses them (no
    engine), one with another seed is refused naming it (store/steps.py)."""
    proc = _eval(tmp_path, "benchmark=heldout_tiny", "limit=3", "samples=2", "max_tokens=48",
                 f"paths.cache_dir={model_cache}", "name=twice")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "eval" / "twice"
    rows = artifacts.read_jsonl(out / "predictions.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    items = load_items("heldout_tiny", limit=3)
    assert [r["id"] for r in rows] == [x for i in items for x in (i["id"], f"{i['id']}~1")]
    assert [r["prompt"] for r in rows] == [i["prompt"] for i in items for _ in range(2)]
    assert summary["items"] == 6 and summary["generation_usage"]["base"]["requests"] == 6
    assert summary["mean_words"] == pytest.approx(sum(r["words"] for r in rows) / 6)
    # the step contract: the same command reuses every answer (no engine); another seed is refused in one line
    args = ("benchmark=heldout_tiny", "limit=3", "samples=2", "max_tokens=48", f"paths.cache_dir={model_cache}",
            "name=twice")
    again = _eval(tmp_path, *args)
    assert again.returncode == 0 and "engine up" not in again.stderr, again.stderr[-3000:]
    assert artifacts.read_jsonl(out / "predictions.jsonl") == rows
    other = _eval(tmp_path, *args, "seed=3")
    assert other.returncode == 2 and "Traceback" not in other.stderr and "engine up" not in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and "(changed: seed)" in other.stderr
    assert "redo=predict" in other.stderr and artifacts.read_jsonl(out / "predictions.jsonl") == rows
