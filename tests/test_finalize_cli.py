"""`python -m selflengthen finalize RUN` through the real CLI: bad input is one line and
leaves the run untouched (on small hand-made run folders), and the whole method's end
(collect with extra pairs, constrain, export, train, merge, eval of the merged model on
vLLM) on the finished 2-iteration tiny run."""
from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selflengthen.commands.finalize import settle, steps_wanted
from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli, sha256


def composed(overrides=(), name="config"):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def fake_run(root, iterations: dict[int, list[int]], finished=(1,), cfg_overrides=()):
    """A run folder as `run` leaves it: config.yaml, and per iteration extended.jsonl rows
    of the given word counts (manifest.json only for the finished ones)."""
    root.mkdir(parents=True)
    OmegaConf.save(composed(cfg_overrides), root / "config.yaml", resolve=True)
    for k, lengths in iterations.items():
        it = artifacts.IterationPaths(root / f"iter_{k}", k)
        artifacts.write_jsonl(it.extended, [
            {"id": f"i{k}-{j}", "instruction_id": f"q{j}", "language": "en", "instruction": f"Write about topic {j}.",
             "response": " ".join(["word"] * n) + f" {k}-{j}.", "words": n + 1} for j, n in enumerate(lengths)])
        if k in finished:
            artifacts.write_json(it.manifest, {"iteration": k, "complete": True})
    return root


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, sha256(p)) for p in root.rglob("*") if p.is_file()}


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("selflengthen: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return errors[0]


# --- settings -------------------------------------------------------------------------------

def test_the_runs_settings_are_used_and_command_line_overrides_win(tmp_path):
    fake_run(tmp_path / "r", {1: [300]}, cfg_overrides=["seed=7", "finalize.constraints.min_words=150"])
    cfg = composed(["run.name=r", f"paths.iterations_dir={tmp_path}", "finalize.dataset_name=mine"], "finalize")
    settled = settle(cfg, ["run.name=r", "finalize.dataset_name=mine", "finalize.constraints.max_words=900"])
    assert settled.seed == 7  # the run's, not the default 0
    assert settled.finalize.constraints.min_words == 150  # the run's saved finalize settings
    assert settled.finalize.constraints.max_words == 900 and settled.finalize.dataset_name == "mine"  # overrides


def test_steps_up_to_the_one_asked_for():
    cfg = OmegaConf.create({"step": "all", "finalize": {"train": False}})
    assert steps_wanted(cfg) == ["collect", "constrain", "export"]
    cfg.finalize.train = True
    assert steps_wanted(cfg) == ["collect", "constrain", "export", "train", "eval"]
    cfg.step = "constrain"
    assert steps_wanted(cfg) == ["collect", "constrain"]


# --- bad input: one line, nothing of the run touched ----------------------------------------

def test_unfinished_iterations_are_named(tmp_path):
    root = fake_run(tmp_path / "r", {1: [300, 400], 2: [500]}, finished=(1,))
    before = snapshot(root)
    line = one_line_error(run_cli("finalize", str(root), cwd=REPO))
    assert "unfinished iterations (iter_2)" in line and "allow_unfinished=true" in line
    assert snapshot(root) == before and not (root / "final").exists()


def test_no_response_in_bounds_says_how_many_and_which_bounds(tmp_path):
    root = fake_run(tmp_path / "r", {1: [40, 60, 80]})
    before = snapshot(root)
    line = one_line_error(run_cli("finalize", "r", f"paths.iterations_dir={tmp_path}", cwd=REPO))
    assert "none of the 3 collected responses (they have 41 to 81 words)" in line
    assert "[200, 800)" in line and "finalize.constraints.min_words" in line
    assert snapshot(root) == before and not (root / "final").exists()


def test_an_unwritable_output_folder(tmp_path):
    root = fake_run(tmp_path / "r", {1: [300]})
    (root / "final").write_text("not a folder")  # where finalize.output_dir=final goes
    before = snapshot(root)
    line = one_line_error(run_cli("finalize", str(root), cwd=REPO))
    assert "cannot write the finalize output folder" in line and "finalize.output_dir" in line
    assert snapshot(root) == before


def test_an_output_folder_outside_the_run_is_refused(tmp_path):
    """finalize.output_dir is a folder name inside the run (config/names.py), not a path."""
    root = fake_run(tmp_path / "r", {1: [300]})
    before = snapshot(root)
    line = one_line_error(run_cli("finalize", str(root), f"finalize.output_dir={tmp_path / 'elsewhere'}", cwd=REPO))
    assert line.startswith("selflengthen: error: config: finalize.output_dir=") and "one folder name" in line
    assert snapshot(root) == before and not (tmp_path / "elsewhere").exists()


def test_an_unknown_run_and_a_missing_run_argument(tmp_path):
    line = one_line_error(run_cli("finalize", "nope", f"paths.iterations_dir={tmp_path}", cwd=REPO))
    assert f"no run at {tmp_path / 'nope'}" in line
    line = one_line_error(run_cli("finalize", "step=collect", cwd=REPO))
    assert "name the run to finalize" in line


# --- the whole step on a finished run -------------------------------------------------------

# Word bounds that hold every response, rounded to tens: how long the tiny model's texts are
# is its build's doing (the preset's [200, 800) can hold none, and finalize stops when nothing
# is in bounds: tests above); rows outside the bounds are tested in test_finalize_rewrite.py
BOUNDS = (1, 100_000)
WIDE = (f"finalize.constraints.min_words={BOUNDS[0]}", f"finalize.constraints.max_words={BOUNDS[1]}",
        "finalize.constraints.units=[{words: 10, prob: 1.0}]")


@pytest.fixture(scope="module")
def finalized(finished_run, model_cache):
    root = finished_run["root"]
    before = snapshot(root)
    args = ("finalize", "e2e", f"paths.iterations_dir={root.parent}", f"paths.cache_dir={model_cache}",
            "finalize.extra_per_language=3", "finalize.train=true", "finalize.merge=true", "eval.limit=4", *WIDE)
    proc = run_cli(*args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    return {"root": root, "final": root / "final", "proc": proc, "args": args, "before": before}


@pytest.mark.slow
def test_collect_keeps_every_pair_once_with_provenance(finalized):
    root, final = finalized["root"], finalized["final"]
    counts = json.loads((final / "manifests" / "collect.json").read_text())["counts"]
    rows = artifacts.read_jsonl(final / "collected.jsonl")
    from_loop = [r for r in rows if r["iteration"] <= 2]
    extended = [artifacts.read_jsonl(root / f"iter_{k}" / "extended.jsonl") for k in (1, 2)]
    assert len(from_loop) == sum(map(len, extended)) - counts["duplicates_removed"]
    assert len({r["response"] for r in rows}) == len(rows)  # exact duplicates removed
    by_id = {f"it{k}-{e['id']}": e for k, ex in zip((1, 2), extended) for e in ex}
    for r in from_loop:
        assert by_id[r["id"]]["response"] == r["response"] and r["source_id"] == by_id[r["id"]]["id"]
    extra = [r for r in rows if r["iteration"] == 3]  # the final generator's own pairs
    assert counts["extra_kept"] == len(extra) and counts["extra_generated"] >= len(extra)
    assert all(r["source"] == "final_generator" and r["response"].strip() for r in extra)
    usage = json.loads((final / "extra" / "manifests" / "generate.json").read_text())["counts"]
    assert usage["adapter"] == "generator"


@pytest.mark.slow
def test_constrain_counts_add_up_and_every_constraint_is_in_its_query(finalized):
    final = finalized["final"]
    c = json.loads((final / "manifests" / "constrain.json").read_text())["counts"]
    rows = artifacts.read_jsonl(final / "constrained.jsonl")
    assert c["constrained"] > 0 and c["constrained"] + c["out_of_bounds"] == c["rows"] == len(rows)
    assert c["rewritten_by_model"] + c["template_fallback"] == c["constrained"]
    for r in rows:
        if r["constraint"] is None:
            assert r["query"] == r["instruction"] and not BOUNDS[0] <= r["words"] < BOUNDS[1]
        else:
            assert BOUNDS[0] <= r["words"] < BOUNDS[1] and r["rewrite"] in ("model", "template")
            assert all(str(n) in r["query"] for n in r["constraint"]["numbers"])


@pytest.mark.slow
def test_exports_load_with_their_consumers(finalized):
    from datasets import load_from_disk

    data = finalized["final"] / "dataset"
    manifest = json.loads((data / "manifest.json").read_text())
    n = manifest["counts"]["rows"]
    ds = load_from_disk(str(data / "hf_dataset"))
    assert len(ds) == n and ds[0]["messages"][0]["role"] == "user"
    alpaca = json.loads((data / "alpaca.json").read_text())
    assert len(alpaca) == n and set(alpaca[0]) == {"instruction", "input", "output"}
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["selflengthen_final"]["file_name"] == "alpaca.json"
    assert "| en |" in (data / "README.md").read_text()


@pytest.mark.slow
def test_the_merged_model_loads_without_peft_and_generated_on_vllm(finalized, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    final = finalized["final"]
    merged = final / "model" / "merged"
    assert not (merged / "adapter_config.json").exists()
    train = json.loads((final / "manifests" / "train.json").read_text())
    assert train["training"]["steps"] > 0 and train["training"]["method"] == "lora"
    model = AutoModelForCausalLM.from_pretrained(str(merged))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    moved = [name for name, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[name])]
    assert moved and all("proj" in name for name in moved)  # LoRA on the linear layers, merged in
    summary = json.loads((final / "eval" / "heldout_tiny" / "summary.json").read_text())
    answers = 4 * OmegaConf.load(finalized["root"] / "config.yaml").eval.samples  # eval.limit=4, each answered eval.samples times
    assert summary["final_model"] == str(merged) and summary["items"] == answers
    assert summary["generation_usage"]["base"]["requests"] == answers  # served on vLLM as a plain model
    assert f"eval       heldout_tiny: {answers} items" in finalized["proc"].stdout


@pytest.mark.slow
def test_the_run_is_untouched_and_a_rerun_resumes_instantly(finalized):
    root, final = finalized["root"], finalized["final"]
    after = {k: v for k, v in snapshot(root).items() if not k.startswith("final")}
    assert after == finalized["before"]
    stamps = {p: p.stat().st_mtime_ns for p in (final / "manifests").glob("*.json")}
    proc = run_cli(*finalized["args"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (final / "manifests").glob("*.json")} == stamps
    assert "starting the vllm engine" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_full_fine_tuning_writes_a_standalone_model(finalized, tiny_model):
    """finalize.training.method=full: every weight trained, saved with its tokenizer (no
    engine: the template insertion constrains the queries)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = finalized["root"]
    proc = run_cli("finalize", "e2e", f"paths.iterations_dir={root.parent}", "step=train",
                   "finalize.output_dir=final_full", "finalize.rewrite.use_model=false",
                   "finalize.training.method=full", "finalize.training.learning_rate=1e-4",
                   "finalize.training.epochs=1", *WIDE, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting the vllm engine" not in proc.stderr
    full = root / "final_full" / "model" / "full"
    assert not (full / "adapter_config.json").exists() and (full / "config.json").exists()
    train = json.loads((root / "final_full" / "manifests" / "train.json").read_text())["training"]
    assert train["method"] == "full" and train["steps"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(full))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model)).state_dict()
    moved = [n for n, p in model.state_dict().items() if not torch.equal(p, base[n])]
    assert any("embed" in n or "norm" in n for n in moved)  # not only LoRA targets: every weight trains
    assert AutoTokenizer.from_pretrained(str(full)).chat_template
    constrain = json.loads((root / "final_full" / "manifests" / "constrain.json").read_text())["counts"]
    assert constrain["rewritten_by_model"] == 0 and constrain["template_fallback"] == constrain["constrained"] > 0
