"""A Hydra sweep through the real CLI: `run -m` puts its jobs under one sweep folder, and
one `inspect` of that folder overlays them (one table per job, one plot)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def test_a_two_job_sweep_lands_in_one_folder_and_is_inspected_at_once(tmp_path, model_cache, tiny_model):
    small = ["iterations=1", "loop.augment.new_per_language=4", "eval.every_iteration=false",
             "loop.sampling.max_tokens=256", "train.epochs=1", f"paths.iterations_dir={tmp_path}",
             f"paths.cache_dir={model_cache}"]
    proc = run_cli("run", "-m", "seed=0,1", *small, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = tmp_path / "tiny-sweep-seed"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["seed-0", "seed-1"]
    for job in ("seed-0", "seed-1"):
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["config"]["seed"] == int(job[-1]) and manifest["iterations_completed"] == 1
    out = run_cli("inspect", "tiny-sweep-seed", "--iterations-dir", str(tmp_path), cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 runs under")
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["seed-0"], ["seed-1"])]
    assert [r[:2] for r in rows] == [["seed-0", "1"], ["seed-1", "1"]]
    png = tmp_path / "tiny-sweep-seed" / "compare_length_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
