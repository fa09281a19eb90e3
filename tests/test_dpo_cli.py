"""`python -m selflengthen dpo` through the real CLI on the tiny model: vLLM samples, the
evaluation's scorer, pairs, TRL's DPOTrainer through the training launcher; then a resume, the one-line
errors, and a second job that continues from the first job's adapter."""
from __future__ import annotations

import json
import random
import string

import pytest
import torch
from safetensors.torch import load_file

from selflengthen.core.text import count_words_longwriter
from selflengthen.evaluation.formulas import longbench_length_score
from selflengthen.store import artifacts
from selflengthen.training import checkpoints
from tests.conftest import REPO, run_cli, sha256

K, LIMIT, STEPS = 3, 4, 3
SMALL = (f"limit={LIMIT}", f"dpo.samples_per_instruction={K}", "max_tokens=80", "dpo.min_margin=0.5",
         f"dpo.train.max_steps={STEPS}", "dpo.train.learning_rate=1e-3", "train.rank=8", "train.alpha=16")


def _dpo(out, model_cache, *args):
    return run_cli("dpo", f"out_dir={out}", f"paths.cache_dir={model_cache}", *SMALL, *args, cwd=REPO)


PLANTED = (1, 2)  # the sample indices of each instruction written here; vLLM samples the others


def varied_words(n: int, seed: int) -> str:
    """n made-up words, none repeated in a pattern: a text the repetition penalty leaves whole."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(n))


def plant_samples(root, limit: int) -> None:
    """Samples 1 and 2 of each instruction as a resumed job's checkpoint finds them: one of
    exactly the required length that ended and does not repeat (S_l = 100, kept whole by
    dpo.penalties), one of a single word (S_l = 0). Every instruction
    then has a pair whatever the tiny model writes (its builds differ between machines: one
    answered a bare "no" to most held-out prompts, and equal scores make no pair), while vLLM
    still samples, and the scorer scores, the rest."""
    from selflengthen.commands.dpo import sample_id
    from selflengthen.evaluation.benchmarks import load_items
    from selflengthen.evaluation.scoring import prediction_row

    rows = []
    for n, item in enumerate(load_items("heldout_tiny", limit=limit)):
        for index, text in zip(PLANTED, (varied_words(item["length"] - 1, n) + " end.", "No.")):
            row = prediction_row("heldout_tiny", item, text)
            assert row["length_score"] == (100.0 if index == PLANTED[0] else 0.0), row
            rows.append({**row, "id": sample_id(item, index), "item": item["id"], "index": index,
                         "finish_reason": "stop", "completion_tokens": min(row["words"], 80)})
    (root / "partial").mkdir(parents=True)
    artifacts.write_jsonl(root / "partial" / "samples.jsonl", rows)


@pytest.fixture(scope="module")
def first_job(tmp_path_factory, model_cache, tiny_model):
    out = tmp_path_factory.mktemp("dpo")
    base_hash = sha256(tiny_model / "model.safetensors")
    plant_samples(out / "fresh", LIMIT)
    proc = _dpo(out, model_cache, "name=fresh")
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    return {"out": out, "root": out / "fresh", "proc": proc, "base_hash": base_hash, "model": tiny_model}


@pytest.mark.slow
def test_dpo_samples_scores_pairs_and_moves_a_fresh_adapter(first_job):
    root = first_job["root"]
    samples = artifacts.read_jsonl(root / "samples.jsonl")
    assert len(samples) == LIMIT * K
    manifest = json.loads((root / "samples.manifest.json").read_text())
    assert manifest["score"].startswith("S_l") and manifest["samples"] == LIMIT * K
    for s in samples:  # the evaluation's own counter and scorer; S = S_l without a judge
        assert s["words"] == count_words_longwriter(s["response"])
        assert s["score"] == s["length_score"] == pytest.approx(longbench_length_score(s["length"], s["words"]))
        assert s["completion_tokens"] <= 80
    pairs = artifacts.read_jsonl(root / "pairs.jsonl")
    assert len(pairs) == LIMIT  # one per instruction: its planted samples differ by 100
    by_item: dict[str, list[dict]] = {}
    for s in samples:
        by_item.setdefault(s["item"], []).append(s)
    for p in pairs:  # best against worst of its instruction, under dpo.penalties (termination, repetition)
        # the planted answer of the required length, ended and not repeating, keeps its S_l of 100: no sample
        # scores above it; the planted one-word answer scores 0, and no penalty goes below 0
        assert p["chosen_index"] == PLANTED[0] and p["chosen_score"] == 100.0
        assert p["rejected_score"] == 0.0 and p["margin"] == 100.0
        assert p["chosen"] == by_item[p["item"]][p["chosen_index"]]["response"]
    summary = json.loads((root / "pairs.manifest.json").read_text())
    assert summary["pairs"] == len(pairs) and summary["instructions"] == LIMIT
    assert summary["penalties"] == ["termination", "repetition"] and summary["made_with"]["penalties"]
    cut = sum(s["finish_reason"] == "length" for s in samples)  # vLLM's answers cut at the 80-token cap
    assert summary["penalised_samples"] >= cut
    train = json.loads((root / "train.manifest.json").read_text())
    assert train["steps"] == STEPS and train["pairs"] == len(pairs) and train["init_adapter"] is None
    assert train["loss_curve"] and all(v == v for v in train["loss_curve"])  # logged, not NaN
    weights = load_file(root / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().max().item() > 0 for v in lora_b)  # a fresh LoRA's B starts at exactly 0
    assert not (root / "adapter" / "ref").exists()  # TRL's frozen reference copy is not saved
    # trained through the one launcher and the trainers' shared harness: the adapter saved is the one it digested
    assert train["world_size"] == 1 and train["resumed_from_step"] is None
    assert checkpoints.tensors_digest(weights) == train["adapter_digest"]
    assert not (root / "adapter.trainer").exists()  # the work folder goes once the adapter is in place
    assert sha256(first_job["model"] / "model.safetensors") == first_job["base_hash"]
    assert f"dpo: {LIMIT * K} samples ({LIMIT} instructions" in first_job["proc"].stdout + first_job["proc"].stderr
    assert f"pairs (best_vs_worst, margin >= 0.5): {len(pairs)}" in first_job["proc"].stdout
    assert f"penalties: termination, repetition ({summary['penalised_samples']} samples" in first_job["proc"].stdout


@pytest.mark.slow
def test_dpo_resumes_and_reports_bad_input_in_one_line(first_job, model_cache, tmp_path):
    out, root = first_job["out"], first_job["root"]
    kept = {p: sha256(root / p) for p in ("samples.jsonl", "pairs.jsonl", "adapter/adapter_model.safetensors")}
    again = _dpo(out, model_cache, "name=fresh")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "samples (" not in again.stdout + again.stderr  # no engine started: every step was complete
    assert {p: sha256(root / p) for p in kept} == kept
    strict = _dpo(out, model_cache, "name=fresh", "dpo.min_margin=1000")  # the step contract: refused
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "(changed: min_margin)" in strict.stderr and "redo=pairs" in strict.stderr
    strict = _dpo(out, model_cache, "name=fresh", "dpo.min_margin=1000", "redo=pairs")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    line = strict.stderr.strip().splitlines()[-1]
    assert "redoing the pairs step" in strict.stdout + strict.stderr
    assert "dpo.min_margin=1000" in line and f"{LIMIT} instructions" in line and "samples.jsonl" in line
    assert sha256(root / "samples.jsonl") == kept["samples.jsonl"]
    for args, says in [(("data=" + str(tmp_path / "none.jsonl"),), "no such file"),
                       (("adapter=" + str(tmp_path / "no-adapter"),), "adapter="),
                       (("dpo.samples_per_instruction=1",), "samples_per_instruction")]:
        proc = _dpo(tmp_path, model_cache, *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
        assert says in proc.stderr


@pytest.mark.slow
def test_dpo_continues_from_an_adapter_and_moves_it(first_job, model_cache):
    start = first_job["root"] / "adapter"
    before = load_file(start / "adapter_model.safetensors")
    plant_samples(first_job["out"] / "continued", 3)
    proc = _dpo(first_job["out"], model_cache, f"adapter={start}", "name=continued", "limit=3")
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    root = first_job["out"] / "continued"
    samples = json.loads((root / "samples.manifest.json").read_text())
    assert samples["adapter"] == str(start)  # sampled with the adapter being tuned
    train = json.loads((root / "train.manifest.json").read_text())
    assert train["init_adapter"] == str(start) and train["reference"].startswith("a frozen copy")
    after = load_file(root / "adapter" / "adapter_model.safetensors")
    assert after.keys() == before.keys()
    assert max((after[k] - before[k]).abs().max().item() for k in before) > 0
    assert all(torch.equal(v, load_file(start / "adapter_model.safetensors")[k]) for k, v in before.items())
