"""The real CLI on the tiny model with real vLLM, TRL and Ray: two iterations, then a
resume, then `inspect`. Slow (a few minutes on 2 cores), and run in CI."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from safetensors.numpy import load_file

from selflengthen import artifacts
from tests.conftest import REPO, run_cli, sha256

pytestmark = pytest.mark.slow
ITERATIONS = 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, model_cache, tiny_model):
    out = tmp_path_factory.mktemp("runs")
    base_hash = sha256(tiny_model / "model.safetensors")
    args = ("run", f"iterations={ITERATIONS}", "run.name=e2e", f"paths.iterations_dir={out}",
            f"paths.cache_dir={model_cache}", "loop.augment.new_per_language=10")
    proc = run_cli(*args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    return {"root": out / "e2e", "proc": proc, "args": args, "base_hash": base_hash, "model": tiny_model}


def test_every_artifact_of_every_iteration(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    assert paths.config.exists() and paths.manifest.exists()
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["iterations_completed"] == ITERATIONS
    assert {"torch", "transformers", "trl", "peft", "ray"} <= set(manifest["versions"])
    assert manifest["model_resolved"] == str(finished_run["model"])
    for k in range(1, ITERATIONS + 1):
        it = paths.iteration(k)
        for stage in artifacts.STAGES:
            assert it.stage_done(stage), (k, stage)
        instructions = artifacts.read_jsonl(it.instructions)
        assert instructions and all(r["language"] == "en" and r["instruction"] for r in instructions)
        extended = artifacts.read_jsonl(it.extended)
        assert extended, f"iteration {k} accepted no extension"
        for row in extended:  # every accepted extension grew by more than 1.2x
            assert row["words"] > 1.2 * row["initial_words"]
        for role in artifacts.ROLES:
            sft = artifacts.read_jsonl(it.sft(role))
            assert len(sft) == len(extended)
            assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
            assert (it.adapter(role) / "adapter_model.safetensors").exists()
        m = json.loads(it.metrics.read_text())
        for key in ("instructions", "generator_first_try", "initial", "extended"):
            assert set(m["words"][key]) == {"n", "mean", "median", "p10", "p90", "max"}
        assert m["training"]["generator"]["train_loss"] > 0 and m["training"]["extender"]["steps"] > 0
        assert 0 < m["acceptance"]["generate_quality"] <= 1
        assert json.loads(it.manifest.read_text())["complete"] is True


def test_sft_files_load_as_a_trl_dataset(finished_run):
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(artifacts.RunPaths(finished_run["root"]).iteration(1).sft("generator")),
                      split="train")
    assert "messages" in ds.column_names and len(ds) > 0


def test_adapters_changed_and_base_model_did_not(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    assert sha256(finished_run["model"] / "model.safetensors") == finished_run["base_hash"]
    for role in artifacts.ROLES:
        first = load_file(str(paths.iteration(1).adapter(role) / "adapter_model.safetensors"))
        second = load_file(str(paths.iteration(2).adapter(role) / "adapter_model.safetensors"))
        lora_b = [k for k in first if "lora_B" in k]
        assert lora_b, "no LoRA B matrices saved"
        assert all(abs(first[k]).max() > 0 for k in lora_b)  # B starts at zero: training moved it
        assert first.keys() == second.keys()
        assert any(not (first[k] == second[k]).all() for k in first)  # iteration 2 trained further
        info = json.loads(paths.iteration(2).stage_manifest(f"train_{role}").read_text())
        assert info["init_adapter"] == str(paths.iteration(1).adapter(role))  # continued, not restarted
        cfg = OmegaConf.load(paths.config)
        assert info["learning_rate"] == cfg.train.per_role[role].get("learning_rate", cfg.train.learning_rate)


def test_iteration_two_generated_with_iteration_one_adapters(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    first = json.loads(paths.iteration(1).stage_manifest("engine_usage").read_text())
    assert set(first["generate"]) == {"base"} and set(first["extend"]) == {"base"}
    usage = json.loads(paths.iteration(2).stage_manifest("engine_usage").read_text())
    assert set(usage["augment"]) == {"base"}  # self-instruct and the judge use the base model
    assert usage["generate"]["generator"]["path"] == str(paths.iteration(1).adapter("generator"))
    assert usage["extend"]["extender"]["path"] == str(paths.iteration(1).adapter("extender"))
    assert set(usage["generate"]) == {"generator"} and set(usage["extend"]) == {"extender"}


def test_rerun_skips_completed_stages(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    stamps = {p: p.stat().st_mtime_ns for p in paths.root.rglob("manifests/*.json")}
    proc = run_cli(*finished_run["args"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iteration 1: complete, skipped" in proc.stderr + proc.stdout
    assert {p: p.stat().st_mtime_ns for p in paths.root.rglob("manifests/*.json")} == stamps


def test_inspect_prints_the_table_and_writes_the_plot(finished_run):
    root = finished_run["root"]
    proc = run_cli("inspect", "e2e", "--iterations-dir", str(root.parent), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("iter"))
    rows = [line.split() for line in lines[header + 2: header + 2 + ITERATIONS]]
    assert [r[0] for r in rows] == [str(k) for k in range(1, ITERATIONS + 1)]
    m1 = json.loads((root / "iter_1" / "metrics.json").read_text())
    assert rows[0][3] == f"{m1['words']['initial']['mean']:.0f}"
    png = root / "length_curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
