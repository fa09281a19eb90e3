"""What an `rl` job (GRPO, conf/rl/default.yaml) will cost, as pure arithmetic: every
optimizer step samples `num_generations` answers for each of `prompts_per_step` prompts on
each of the training workers (TRL's per-device batch is num_generations x prompts_per_step,
scored in `accumulation` passes),
each answer a mean `mean_completion` tokens (at most max_completion_length). Training reads
each answer once with its prompt (one forward and backward a step: one GRPO iteration per
generation, beta 0 needs no reference model).

Memory, per GPU, of training with generation colocated (TRL's vLLM colocate mode): the
LoRA training of memory.training_gib over the per-device batch at the cap (prompt +
max_completion_length per sequence), beside the engine's own copy of the weights and the KV
cache of the per-device batch's sequences at the cap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from selflengthen.estimate import memory
from selflengthen.estimate.arch import Arch


@dataclass(frozen=True)
class RlShape:
    """rl.train's sizes and the training placement."""

    steps: int
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    workers: int = 1
    prompt_tokens: float = 0.0   # mean tokens of a prompt with its chat template
    accumulation: int = 1        # a step's answers scored in this many passes

    @property
    def per_device_sequences(self) -> int:
        return self.num_generations * self.prompts_per_step

    @property
    def per_pass_sequences(self) -> int:
        """The answers one forward and backward pass of the loss holds."""
        return max(1, self.per_device_sequences // max(1, self.accumulation))

    @property
    def completions_per_step(self) -> int:
        return self.per_device_sequences * max(1, self.workers)

    @property
    def longest(self) -> float:
        """A sequence at the cap: the prompt and max_completion_length tokens."""
        return self.prompt_tokens + self.max_completion_length


def mean_completion(cap: int, fraction: float) -> float:
    """The assumed mean answer: `fraction` of the cap (an answer never passes the cap)."""
    return min(float(cap), cap * fraction)


@dataclass(frozen=True)
class RlTokens:
    completions: float
    generated_tokens: float
    prompt_tokens: float
    training_tokens: float
    mean_completion: float

    def as_dict(self) -> dict:
        return asdict(self)


def tokens(s: RlShape, mean: float) -> RlTokens:
    """Answers and tokens of the whole schedule at a mean answer of `mean` tokens."""
    mean = min(mean, float(s.max_completion_length))
    n = float(s.steps * s.completions_per_step)
    return RlTokens(completions=n, generated_tokens=n * mean, prompt_tokens=n * s.prompt_tokens,
                    training_tokens=n * (s.prompt_tokens + mean), mean_completion=mean)


def training_gpu_hours(s: RlShape, t: RlTokens, a: Arch, tflops: float, mfu: float) -> float:
    """The optimizer's GPU-hours: every answer with its prompt, once, from the FLOPs."""
    return memory.training_gpu_hours(t.completions, s.prompt_tokens + t.mean_completion, 1, a, tflops, mfu)


def colocated_gib(a: Arch, s: RlShape, *, rank: int, strategy: str, cpu_offload: bool,
                  gradient_checkpointing: bool, dtype_bytes: float, overhead_gib: float) -> dict:
    """Per GPU: training (weights, adapter and optimizer, activations and logits of one pass
    of the loss at the cap: the per-device batch / accumulation, the logits of the answers
    only) + the engine's weights + its KV cache for the per-device batch's sequences at the
    cap; the overhead counted once."""
    seq = int(s.per_pass_sequences * s.longest)
    train = memory.training_gib(a, seq=seq, rank=rank, workers=s.workers, strategy=strategy, cpu_offload=cpu_offload,
                                gradient_checkpointing=gradient_checkpointing, overhead_gib=overhead_gib)
    engine = memory.serving_gib(a, dtype_bytes=dtype_bytes, tensor_parallel=1, seq_len=int(s.longest),
                                sequences=s.per_device_sequences, max_loras=0, lora_rank=rank, overhead_gib=0.0)
    # the loss keeps the logits of the answers only (TRL's logits_to_keep), not of the prompts
    logits = memory.gib(s.per_pass_sequences * s.max_completion_length * a.vocab * memory.LOGIT_BYTES)
    parts = {"weights": train["weights"], "adapter": train["adapter"], "activations": train["activations"],
             "logits": logits, "engine_weights": engine["weights"], "kv": engine["kv"],
             "overhead": overhead_gib}
    return {**parts, "total": sum(parts.values()), "seq": seq, "kv_per_sequence": engine["kv_per_sequence"],
            "sequences": s.per_device_sequences}
