"""The real CLI on the tiny model with real vLLM, TRL and Ray: two iterations, then a
resume, then `inspect`. Slow (a few minutes on 2 cores), and run in CI."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from safetensors.numpy import load_file

from selflengthen.core.text import count_words, lowest_window_compression
from selflengthen.pipeline import stages as loop_stages
from selflengthen.store import artifacts
from tests.conftest import E2E_ITERATIONS as ITERATIONS
from tests.conftest import REPO, run_cli, sha256

pytestmark = pytest.mark.slow
def test_every_artifact_of_every_iteration(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    assert paths.config.exists() and paths.manifest.exists()
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["iterations_completed"] == ITERATIONS
    assert {"torch", "transformers", "trl", "peft", "ray"} <= set(manifest["versions"])
    assert manifest["model_resolved"] == str(finished_run["model"])
    growth = OmegaConf.load(paths.config).loop.extend
    assert growth.max_growth is not None  # the tiny preset bounds growth: its bound is exercised here
    floor = OmegaConf.load(paths.config).loop.quality.en.loop_floor
    assert floor is not None  # and keeps loops out of the training data: so is the loop rule
    # How many items each filter lets through is the tiny model's doing (its builds differ
    # between machines); what holds on any machine: the counts agree from file to file, every
    # kept item passes its filter, and an iteration with nothing accepted carries its
    # adapters over. Iteration 1 has nothing to carry over: the run cannot finish without data.
    for k in range(1, ITERATIONS + 1):
        it = paths.iteration(k)
        for stage in loop_stages.names():
            assert it.stage_done(stage), (k, stage)
        instructions = artifacts.read_jsonl(it.instructions)
        assert all(r["language"] == "en" and r["instruction"] for r in instructions)
        initial = artifacts.read_jsonl(it.initial)
        assert {r["instruction_id"] for r in initial} <= {r["id"] for r in instructions}
        extended = artifacts.read_jsonl(it.extended)
        assert extended or k > 1, "iteration 1 accepted no extension, yet the run finished"
        assert {r["instruction_id"] for r in extended} <= {r["instruction_id"] for r in initial}
        for row in extended:  # every accepted extension grew by more than min_growth, and no more than max_growth
            assert growth.min_growth * row["initial_words"] < row["words"] <= growth.max_growth * row["initial_words"]
        assert all(lowest_window_compression(r["response"]) >= floor for r in initial + extended)
        m = json.loads(it.metrics.read_text())
        assert (m["counts"]["instructions"], m["counts"]["initial"], m["counts"]["extended"]) == \
            (len(instructions), len(initial), len(extended))
        for role in artifacts.ROLES:
            sft = artifacts.read_jsonl(it.sft(role))
            assert len(sft) == len(extended) == m["counts"][f"sft_{role}"]
            assert all([msg["role"] for msg in r["messages"]] == ["user", "assistant"] for r in sft)
            adapter = it.adapter(role) / "adapter_model.safetensors"
            assert adapter.exists()
            trained = m["training"][role]
            if extended:
                assert trained["examples"] == len(sft) and trained["steps"] > 0 and trained["train_loss"] > 0
            else:  # nothing to learn from: the previous iteration's adapter, unchanged
                assert trained["examples"] == trained["steps"] == 0
                assert sha256(adapter) == sha256(paths.iteration(k - 1).adapter(role) / "adapter_model.safetensors")
        for key in ("instructions", "generator_first_try", "initial", "extended"):
            assert set(m["words"][key]) == {"n", "mean", "median", "p10", "p90", "max"}
        quality = json.loads(it.stage_manifest("generate").read_text())["counts"]["quality"]
        assert m["acceptance"]["generate_quality"] == quality["pass_rate"]
        assert 0 <= quality["passed"] <= quality["checked"] and quality["passed"] >= (1 if initial else 0)
        assert json.loads(it.manifest.read_text())["complete"] is True


def test_sft_files_load_as_a_trl_dataset(finished_run):
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(artifacts.RunPaths(finished_run["root"]).iteration(1).sft("generator")),
                      split="train")
    assert "messages" in ds.column_names and len(ds) > 0


def test_length_hints_reach_the_generators_rows_only(finished_run):
    """loop.curate.length_hints=0.5: some of the generator's rows ask for their response's own
    length (the hint holds the response in its LonGen window); the extender's never do."""
    from selflengthen.evaluation.benchmarks import constraint_window

    paths = artifacts.RunPaths(finished_run["root"])
    hinted = bare = 0
    for k in range(1, ITERATIONS + 1):
        it = paths.iteration(k)
        rows = artifacts.read_jsonl(it.sft("generator"))
        for row in rows:
            asked, answer = row["messages"][0]["content"], row["messages"][-1]["content"]
            if "length_hint" not in row:
                bare += 1
                continue
            hinted += 1
            low, high = constraint_window(row["length_hint"], "")
            assert row["length_hint"] in asked and low <= count_words(answer) <= high
        assert all("length_hint" not in r for r in artifacts.read_jsonl(it.sft("extender")))
        counts = json.loads(it.stage_manifest("curate").read_text())["counts"]
        assert counts["length_hints"] == sum("length_hint" in r for r in rows)
    assert hinted and bare, (hinted, bare)


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
        info = json.loads(paths.iteration(2).stage_manifest(f"train_{role}").read_text())
        assert info["init_adapter"] == str(paths.iteration(1).adapter(role))  # continued, not restarted
        if info["examples"]:  # iteration 2 had data (the tiny model's doing): it trained further
            assert any(not (first[k] == second[k]).all() for k in first)
            cfg = OmegaConf.load(paths.config)
            assert info["learning_rate"] == cfg.train.per_role[role].get("learning_rate", cfg.train.learning_rate)
        else:  # none: iteration 1's adapter carried over as it was
            assert "carried over" in info["skipped"] and all((first[k] == second[k]).all() for k in first)


def test_iteration_two_generated_with_iteration_one_adapters(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    first = json.loads(paths.iteration(1).stage_manifest("engine_usage").read_text())
    assert set(first["generate"]["adapters"]) == {"base"} and set(first["extend"]["adapters"]) == {"base"}
    usage = json.loads(paths.iteration(2).stage_manifest("engine_usage").read_text())
    assert set(usage["augment"]["adapters"]) == {"base"}  # self-instruct and the judge use the base model
    it2 = paths.iteration(2)
    # each stage asked only with its role's adapter of iteration 1, as often as the stage itself
    # counted; whether it had anything to ask (instructions; drafts of more than one paragraph)
    # is the model's doing
    extend = json.loads(it2.stage_manifest("extend").read_text())["counts"]["by_method"]["extend"]
    asked = {"generate": json.loads(it2.stage_manifest("generate").read_text())["counts"]["requests"],
             "extend": extend["stage1_requests"] + extend["stage2_requests"]}
    assert bool(asked["generate"]) == bool(artifacts.read_jsonl(it2.instructions))
    for stage, role in (("generate", "generator"), ("extend", "extender")):
        served = usage[stage]["adapters"]
        assert set(served) == ({role} if asked[stage] else set()), (stage, served, asked)
        if served:
            assert served[role]["path"] == str(paths.iteration(1).adapter(role))
            assert served[role]["requests"] == asked[stage]


def test_token_accounting_per_stage_and_in_the_run_manifest(finished_run):
    paths = artifacts.RunPaths(finished_run["root"])
    total = 0
    for k in range(1, ITERATIONS + 1):
        usage = json.loads(paths.iteration(k).stage_manifest("engine_usage").read_text())
        for stage in ("augment", "generate", "extend"):
            u = usage[stage]
            assert u["requests"] == sum(a["requests"] for a in u["adapters"].values())
            assert sum(r["requests"] for r in u["per_replica"]) == u["requests"]
            # iteration 1 asks in every stage (the run needs its data); a later one's generate or
            # extend stage has nothing to ask when the stage before it kept nothing
            assert u["requests"] > 0 or (k > 1 and stage != "augment"), (k, stage)
            if u["requests"]:
                assert u["prompt_tokens"] > u["requests"]
                # seconds are recorded to 0.01 s and tokens/s to 0.1: a short stage (a second or
                # less) moves the ratio of the rounded values by more than any fixed share
                c, s = u["completion_tokens"], u["seconds"]
                assert c / (s + 0.005) - 0.05 <= u["tokens_per_second"] <= c / max(s - 0.005, 1e-9) + 0.05
            kept = artifacts.read_jsonl({"augment": paths.iteration(k).instructions, "generate": paths.iteration(k).initial,
                                         "extend": paths.iteration(k).extended}[stage])
            assert u["completion_tokens"] > 0 or not kept, (k, stage)  # a text the stage kept was generated
        m = json.loads(paths.iteration(k).metrics.read_text())
        assert m["tokens"]["completion_tokens"] == sum(usage[s]["completion_tokens"]
                                                       for s in ("augment", "generate", "extend"))
        total += m["tokens"]["completion_tokens"]
        # the generate stage's requests = every try of every sample
        gen = json.loads(paths.iteration(k).stage_manifest("generate").read_text())
        assert gen["counts"]["requests"] == usage["generate"]["requests"]
    assert json.loads(paths.manifest.read_text())["tokens"]["completion_tokens"] == total


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
    rows = [line.split() for line in lines[header + 2: header + 3 + ITERATIONS]]
    assert [r[0] for r in rows] == [str(k) for k in range(0, ITERATIONS + 1)]  # 0: the base model's eval
    rows = rows[1:]
    m1 = json.loads((root / "iter_1" / "metrics.json").read_text())
    assert rows[0][3] == f"{m1['words']['initial']['mean']:.0f}"
    png = root / "length_curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_iteration_is_evaluated_on_the_held_out_set(finished_run):
    """eval.every_iteration (on in the tiny preset): the base model as iteration 0, then each
    trained generator, each scored with S_l; inspect shows the columns."""
    root = finished_run["root"]
    samples = OmegaConf.load(root / "config.yaml").eval.samples  # the preset answers each item several times
    answers = 6 * samples  # eval.limit=6
    for k in range(0, ITERATIONS + 1):
        out = root / f"iter_{k}" / "eval" / "heldout_tiny"
        summary = json.loads((out / "summary.json").read_text())
        rows = artifacts.read_jsonl(out / "predictions.jsonl")
        assert summary["items"] == len(rows) == answers and summary["iteration"] == k and summary["samples"] == samples
        assert len({r["id"].split("~")[0] for r in rows}) == 6
        assert summary["adapter"] == (None if k == 0 else "generator")
        assert all(0 <= r["length_score"] <= 100 and r["words"] >= 0 for r in rows)
        assert summary["length_score"]["overall"] == pytest.approx(sum(r["length_score"] for r in rows) / answers)
        assert (out / "plot.png").exists() and not (out / "partial").exists()
        served = summary["generation_usage"]
        if k == 0:
            assert set(served) == {"base"} and served["base"]["requests"] == answers
        else:  # served with that iteration's own generator adapter
            assert set(served) == {"generator"} and served["generator"]["requests"] == answers
            assert served["generator"]["path"] == str(artifacts.RunPaths(root).iteration(k).adapter("generator"))
            assert json.loads((root / f"iter_{k}" / "metrics.json").read_text())["eval"]["heldout_tiny"]["items"] == answers
    proc = run_cli("inspect", "e2e", "--iterations-dir", str(root.parent), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("iter"))
    assert "heldout_tiny words" in header and "heldout_tiny score" in header
    assert "heldout_tiny verdict/empty/cut" in header
    assert "heldout_tiny d3/rep/zip" in header and "ext d3/rep/zip" in header  # quality beside the lengths
    base_row = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["0"])
    base = json.loads((root / "iter_0" / "eval" / "heldout_tiny" / "summary.json").read_text())
    nw = base["not_writing"]
    assert base_row.split()[-2:] == [f"{base['length_score']['overall']:.2f}",
                                     f"{nw['verdict']}/{nw['empty']}/{nw['cut']}"]
    predictions = [json.loads(line) for line in (root / "iter_0" / "eval" / "heldout_tiny" /
                                                 "predictions.jsonl").read_text().splitlines()]
    assert nw["cut"] == sum(r["finish_reason"] == "length" for r in predictions)
    from selflengthen.evaluation.scoring import response_signals  # judge-free quality, recomputed

    assert base["signals"] == response_signals(predictions) and base["signals"]["texts"] == len(predictions)
    metrics = json.loads((root / "iter_1" / "metrics.json").read_text())
    kept = [json.loads(line) for line in (root / "iter_1" / "extended.jsonl").read_text().splitlines() if line]
    assert metrics["signals"]["extended"]["texts"] == len(kept)


def test_eval_of_a_run_iteration_uses_its_generator_on_its_base_model(finished_run, tmp_path):
    root = finished_run["root"]
    proc = run_cli("eval", "benchmark=heldout_tiny", "adapter=e2e/iter_1", "limit=3", "max_tokens=64",
                   f"paths.iterations_dir={root.parent}", f"out_dir={tmp_path}", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "e2e-iter_1-heldout_tiny" / "summary.json").read_text())
    assert summary["model"] == str(finished_run["model"])
    assert summary["generation_usage"]["generator"]["path"] == str(root / "iter_1" / "adapters" / "generator")
    assert summary["generation_usage"]["generator"]["requests"] == 3
