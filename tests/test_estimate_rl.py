"""estimate.verb=rl: the GRPO job's arithmetic against hand-computed numbers (answers,
tokens, FLOPs, colocated memory), a finished rl job's measurements read from files written
by the writers the rl verb uses, and the table through the real command line (no engine,
no training). Writes only under tmp."""
from __future__ import annotations

import json
import re

import pytest

from selflengthen import preflight
from selflengthen.commands import estimate as command
from selflengthen.core.errors import UserError
from selflengthen.estimate import arch, measured, memory, rl, settings
from selflengthen.store import artifacts
from tests.conftest import run_cli

GIB = 1024 ** 3
# 2 layers, hidden 4, 2 heads + 1 KV head of 2, MLP 8, vocabulary 10, tied embeddings
SMALL = arch.Arch("small", 2, 4, 2, 1, 2, 8, 10, tied_embeddings=True)


def shape(**over) -> rl.RlShape:
    base = dict(steps=10, prompts_per_step=2, num_generations=4, max_completion_length=100, workers=3,
                prompt_tokens=20)
    return rl.RlShape(**{**base, **over})


def test_answers_and_tokens_by_hand():
    s = shape()
    assert (s.per_device_sequences, s.completions_per_step, s.longest) == (8, 24, 120)
    t = rl.tokens(s, 50)
    # 10 steps x 24 answers; each 50 generated, 20 prompt, 70 trained
    assert (t.completions, t.generated_tokens, t.prompt_tokens, t.training_tokens) == (240, 12_000, 4_800, 16_800)
    assert rl.tokens(s, 500).mean_completion == 100  # never past the cap
    assert rl.tokens(shape(workers=1), 50).completions == 80
    assert rl.mean_completion(100, 0.5) == 50 and rl.mean_completion(768, 1.0) == 768


def test_training_hours_by_hand():
    s = shape()
    t = rl.tokens(s, 50)
    n = arch.params(SMALL)
    assert n == 10 * 4 + 2 * arch.layer_params(SMALL) + 4
    # per token: 6 N + 4 x attention (2 x 2 x 2 layers x q_dim 4 x 70 / 2 = 1,120)
    flops = 240 * 70 * (6 * n + 4 * 1_120)
    assert rl.training_gpu_hours(s, t, SMALL, tflops=100, mfu=0.5) == pytest.approx(flops / (100e12 * 0.5) / 3600)


def test_colocated_memory_by_hand():
    s = shape()
    got = rl.colocated_gib(SMALL, s, rank=4, strategy="ddp", cpu_offload=False, gradient_checkpointing=True,
                           dtype_bytes=2, overhead_gib=2.0)
    train = memory.training_gib(SMALL, seq=8 * 120, rank=4, workers=3, strategy="ddp", cpu_offload=False,
                                gradient_checkpointing=True, overhead_gib=2.0)
    assert got["seq"] == 960 and got["sequences"] == 8
    assert (got["weights"], got["adapter"], got["activations"]) == (train["weights"], train["adapter"],
                                                                    train["activations"])
    # the answers' logits only: 8 x 100 tokens x vocabulary 10 x 10.3 bytes
    assert got["logits"] == pytest.approx(8 * 100 * 10 * 10.3 / GIB)
    # a second copy of the weights in bf16, and K and V of 2 layers x 1 head x 2 x 2 bytes = 16 bytes a token
    assert got["engine_weights"] == pytest.approx(arch.params(SMALL) * 2 / GIB)
    assert got["kv_per_sequence"] == pytest.approx(16 * 120 / GIB) and got["kv"] == pytest.approx(8 * 16 * 120 / GIB)
    parts = ("weights", "adapter", "activations", "logits", "engine_weights", "kv", "overhead")
    assert got["total"] == pytest.approx(sum(got[p] for p in parts)) and got["overhead"] == 2.0


def finished_rl_job(root, lengths=(100, 200)):
    """An rl job's folder as the verb leaves it: steps.jsonl and manifest.json (commands/rl.py)."""
    root.mkdir(parents=True)
    artifacts.write_jsonl(root / "steps.jsonl", [{"step": i + 1, "completions/mean_length": n}
                                                 for i, n in enumerate(lengths)])
    artifacts.write_json(root / "manifest.json", {"verb": "rl", "model": "embedded:tiny", "train": {
        "num_generations": 4, "prompts_per_step": 2, "world_size": 2, "seconds": 10.0, "device": "cpu"}})
    return root


def test_a_finished_rl_job_measures_its_answers_and_rate(tmp_path):
    found = measured.rl_job(finished_rl_job(tmp_path / "job"))
    assert found["mean_completion"] == 150 and found["steps"] == 2 and found["model"] == "embedded:tiny"
    # (100 + 200) tokens x 4 x 2 x 2 workers answers a step, in 10 s on 2 GPUs
    assert found["tokens_per_s_per_gpu"] == pytest.approx(300 * 16 / 10 / 2)
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="not a finished rl job"):
        measured.rl_job(tmp_path / "other")


def test_rl_shape_reads_the_composed_config():
    c = preflight.settings(command.compose(["estimate.verb=rl", "rl.train.num_generations=6", "train.workers=2"]),
                           "estimate", settings.CONFIG_CHECK, here=False)
    s = settings.rl_shape(c)
    assert (s.num_generations, s.prompts_per_step, s.steps, s.max_completion_length, s.workers) == (6, 2, 60, 768, 2)
    assert s.prompt_tokens == pytest.approx(30 + 1.35 * 40)


def test_rl_estimate_through_the_command_line(tmp_path):
    out = tmp_path / "rl.json"
    proc = run_cli("estimate", "estimate.verb=rl", "rl.train.steps=10", "rl.train.max_completion_length=100",
                   "estimate.tokens_per_s_per_gpu=50", f"estimate.out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    # 10 steps x 8 answers x 2 prompts = 160 answers of 50 tokens (half the cap): 8,000 at 50 tokens/s
    assert "10 GRPO steps, 8 answers x 2 prompts = 16 answers a step" in text
    assert re.search(r"answers +160\n", text) and re.search(r"generated tokens +8k  GPU-hours 0\.044\n", text), text
    assert "memory per GPU, training with colocated generation" in text and "fits in 80 GiB" in text
    written = json.loads(out.read_text())
    assert written["tokens"]["generated_tokens"] == 8000 and written["gpu_hours"]["generation"] == pytest.approx(
        8000 / 50 / 3600)
    assert "iter  stage" not in text  # not the run's table
    job = finished_rl_job(tmp_path / "rl" / "done")
    proc = run_cli("estimate", "estimate.verb=rl", f"estimate.from_run={job}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"mean answer +150 tokens \(measured by", proc.stdout) and "240 generated tokens/s" in proc.stdout


def test_bad_rl_estimate_input_is_one_line(tmp_path):
    proc = run_cli("estimate", "estimate.verb=dpo", cwd=tmp_path)
    assert proc.returncode == 2 and "estimate.verb" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("estimate", "estimate.verb=rl", f"estimate.from_run={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "not a finished rl job" in proc.stderr and proc.stderr.count("\n") == 1


def test_accumulation_divides_the_loss_pass_not_the_engines_sequences():
    one, four = (rl.colocated_gib(SMALL, shape(accumulation=k), rank=16, strategy="ddp", cpu_offload=False,
                                  gradient_checkpointing=True, dtype_bytes=2, overhead_gib=1.0) for k in (1, 4))
    assert four["logits"] == one["logits"] / 4 and four["activations"] < one["activations"]
    assert four["kv"] == one["kv"] and four["sequences"] == one["sequences"]
