"""The samples step of `dpo` with scripted engines (no model): every sample in flight with
its own seed, S = (S_l + S_q)/2 with a judge (None when the judge's answer is unreadable),
a resume that asks only for the missing samples, and samples made with other settings kept.
The end-to-end test (test_dpo_cli.py) runs the same step on vLLM."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
from hydra import compose, initialize_config_dir

from selflengthen.commands import dpo as command
from selflengthen.core import signals
from selflengthen.core.errors import UserError
from selflengthen.evaluation.benchmarks import get_benchmark, load_items
from selflengthen.evaluation.formulas import longbench_length_score
from selflengthen.models.resolve import Served
from selflengthen.store import artifacts
from tests.conftest import REPO
from tests.fakes import ScriptedEngine, typed

K = 3
DIMS = ("relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience")


def _cfg(*overrides: str):
    """The dpo verb's typed settings with these overrides."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return typed(compose(config_name="dpo", overrides=[f"dpo.samples_per_instruction={K}", "dpo.temperature=0.9",
                                                           *overrides]), "dpo")


def serve(settings, adapters: dict) -> Served:
    return Served("model", adapters, settings.model, settings.loop.sampling, settings.engine)


def writer(request, sampling):
    """Sample j of any instruction: 10 * (j + 1) words."""
    index = int(request.key.rsplit("#", 1)[1])
    return " ".join(["alpha"] * 10 * (index + 1)) + "."


def judge(request, sampling):
    """Top marks for 10 words, an unreadable answer for 20, bottom marks for 30."""
    words = request.messages[-1]["content"].count("alpha")
    if words == 20:
        return "I cannot rate this."
    return json.dumps({d: 5 if words == 10 else 1 for d in DIMS})


def _patch(monkeypatch, gen: ScriptedEngine | None, jud: ScriptedEngine | None):
    @asynccontextmanager
    async def serving(model_path, adapters, *settings):
        assert gen is not None, "no engine should start"
        yield gen

    @asynccontextmanager
    async def judge_engine(*settings):
        assert jud is not None, "no judge should start"
        yield jud

    monkeypatch.setattr(command, "serving", serving)
    monkeypatch.setattr(command, "judge_engine", judge_engine)


def test_samples_are_all_asked_seeded_and_scored_with_the_judge(tmp_path, monkeypatch):
    cfg = _cfg("judge=openai", "judge.model=j", "judge.retries=2")
    bench = get_benchmark("heldout_tiny")
    items = load_items("heldout_tiny", limit=2)
    gen, jud = ScriptedEngine(writer), ScriptedEngine(judge)
    _patch(monkeypatch, gen, jud)
    paths = command.DpoPaths(tmp_path / "job")
    rows, info = command.make_samples(cfg, paths, bench, items, serve(cfg, {"generator": "/adapters/g"}))
    assert len(gen.calls) == len(rows) == 2 * K
    assert {r.adapter for r in gen.requests} == {"generator"}
    assert len({r.seed for r in gen.requests}) == 2 * K  # one seed per sample
    assert {s.temperature for _, s in gen.calls} == {0.9}
    assert info["score"] == "S=(S_l+S_q)/2" and info["adapter"] == "/adapters/g"
    for row in rows:
        s_l = longbench_length_score(row["length"], 10 * (row["index"] + 1))
        assert row["length_score"] == pytest.approx(s_l)
        expected = {0: (s_l + 100) / 2, 1: None, 2: (s_l + 0) / 2}[row["index"]]
        assert row["score"] == (pytest.approx(expected) if expected is not None else None)
    assert len(jud.calls) == 2 * (2 + 1 + 1)  # the unreadable answer is asked judge.retries=2 times
    assert artifacts.read_jsonl(paths.samples) == rows
    assert not (paths.root / "partial").exists() and paths.manifest("samples").exists()
    written = artifacts.read_jsonl(paths.samples)  # the samples' judge-free quality, recomputed from the file
    want = signals.aggregate([r["response"] for r in written], [r["language"] for r in written],
                             [r["finish_reason"] for r in written])
    got = artifacts.read_json(paths.manifest("samples"))["signals"]
    assert {key: got[key] for key in want} == pytest.approx(want) and got["texts"] == 2 * K
    assert got["words_seg4"] is not None  # and along each sample, by segment
    _patch(monkeypatch, None, None)  # finished: a rerun starts nothing
    again, _ = command.make_samples(cfg, paths, bench, items, serve(cfg, {"generator": "/adapters/g"}))
    assert again == rows
    wrong = _cfg("judge=openai", "judge.model=j", "judge.retries=2", "seed=5")
    with pytest.raises(UserError, match="other settings"):  # never overwritten
        command.make_samples(wrong, paths, bench,
                             items, serve(wrong, {"generator": "/adapters/g"}))


def test_a_killed_samples_step_asks_only_for_the_missing_samples(tmp_path, monkeypatch):
    cfg = _cfg()  # judge=none: S = S_l
    bench = get_benchmark("heldout_tiny")
    items = load_items("heldout_tiny", limit=2)
    paths = command.DpoPaths(tmp_path / "job")
    first = ScriptedEngine(writer)
    _patch(monkeypatch, first, None)
    full, info = command.make_samples(cfg, paths, bench, items, serve(cfg, {}))
    assert info["score"] == "S_l (judge=none)" and all(r["score"] == r["length_score"] for r in full)
    assert info["generated_tokens"] == sum(len(writer_text.split()) for writer_text in (r["response"] for r in full))
    # as if killed after 4 of the 6 samples: their checkpoint is there, no samples file, no manifest
    paths.manifest("samples").unlink()
    paths.samples.unlink()
    artifacts.write_json(paths.root / "partial" / "settings.json", {"config_hash": info["config_hash"]})
    artifacts.write_jsonl(paths.partial("samples"), [{k: v for k, v in r.items() if k != "score"} for r in full[:4]])
    second = ScriptedEngine(writer)
    _patch(monkeypatch, second, None)
    rows, _ = command.make_samples(cfg, paths, bench, items, serve(cfg, {}))
    assert sorted(r.key for r in second.requests) == sorted(r["id"] for r in full[4:])
    assert rows == full
