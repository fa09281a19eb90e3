"""A Hydra sweep through the real CLI: `run -m loop.synth=extend,agentwrite` (the paper's
extender against LongWriter's AgentWrite on the same seed) puts its jobs under one sweep
folder, and one `inspect` of that folder overlays them (one table per job, one plot); the
agentwrite job is also the 1-iteration loop test of loop.synth=agentwrite."""
from __future__ import annotations

import json

import pytest

from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli
from tests.test_synth import check_an_agentwrite_iteration

pytestmark = pytest.mark.slow(minutes=2)


def test_a_two_job_sweep_over_synth_lands_in_one_folder_and_is_inspected_at_once(tmp_path, model_cache, tiny_model):
    small = ["iterations=1", "loop.augment.new_per_language=10", "eval.every_iteration=false",
             "loop.sampling.max_tokens=256", "train.epochs=1", f"paths.iterations_dir={tmp_path}",
             f"paths.cache_dir={model_cache}",
             # the agentwrite job trains on every response of a word or more: which ones would
             # pass the quality check is the tiny model's build's doing, and with none kept the
             # iteration has nothing to train on (the filter itself: tests/test_agentwrite_mix.py)
             "agentwrite.filter.quality=false", "agentwrite.filter.min_words=1"]
    proc = run_cli("run", "-m", "loop.synth=extend,agentwrite", *small, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = tmp_path / "tiny-sweep-loop.synth"
    jobs = ["loop.synth-agentwrite", "loop.synth-extend"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs
    for job in jobs:
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["config"]["loop"]["synth"] == job.split("-")[-1] and manifest["iterations_completed"] == 1
        assert manifest["config"]["seed"] == 0  # the same seed: the methods differ, nothing else
    extend_rows = artifacts.read_jsonl(sweep / "loop.synth-extend" / "iter_1" / "extended.jsonl")
    assert extend_rows and {r.get("method", "extend") for r in extend_rows} == {"extend"}
    check_an_agentwrite_iteration(sweep / "loop.synth-agentwrite")
    out = run_cli("inspect", "tiny-sweep-loop.synth", "--iterations-dir", str(tmp_path), cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 runs under")
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in ([jobs[0]], [jobs[1]])]
    assert [r[:2] for r in rows] == [[jobs[0], "1"], [jobs[1], "1"]]
    png = sweep / "compare_length_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
