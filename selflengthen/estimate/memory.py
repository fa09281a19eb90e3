"""Memory one GPU needs, and the FLOPs of training, as pure arithmetic over a model's shape
(arch.py). Serving: weights at their dtype, the LoRA slots vLLM reserves, and the KV cache
of the sequences in flight. Training (LoRA, batch 1): frozen weights, the adapter with its
gradients and AdamW state, activations under gradient checkpointing, and the logits of
the loss; data-parallel (ddp) keeps everything on every GPU, FSDP / DeepSpeed ZeRO-3
shard the weights and adapter state across `train.workers`, and CPU offload moves them to
host memory. The activation constants were measured on an H100
(scripts/measure_train_memory.py; docs/cluster.md has the table).
"""
from __future__ import annotations

from selflengthen.estimate.arch import Arch, kv_bytes_per_token, layer_params, lora_params, params

GIB = 1024 ** 3
# Activations of the layer being recomputed (gradient checkpointing), in bf16 values per
# token: its inputs, q/k/v/attention output, the MLP's gate/up/activation, and the LoRA
# dropout copies of each linear's input.
LAYER_HIDDEN_VALUES = 12
LAYER_MLP_VALUES = 5
# Bytes per token and vocabulary entry of the loss: bf16 logits, their fp32 copy and the
# fp32 gradient (10.3 measured for both the Qwen2 and the Llama-3 vocabulary: 2k-16k tokens,
# within 1% of the measured peak together with the terms above).
LOGIT_BYTES = 10.3
ADAPTER_BYTES = 16  # per adapter weight: fp32 weight + fp32 gradient + AdamW's two fp32 moments
SHARDED = ("fsdp", "deepspeed")


def gib(n_bytes: float) -> float:
    return n_bytes / GIB


def serving_gib(a: Arch, *, dtype_bytes: float, tensor_parallel: int, seq_len: int, sequences: int,
                max_loras: int, lora_rank: int, overhead_gib: float) -> dict:
    """Per GPU of one replica (tensor_parallel GPUs): weights, LoRA slots, KV cache for
    `sequences` sequences of `seq_len` tokens, a fixed overhead, and their total."""
    weights = gib(params(a) * dtype_bytes / tensor_parallel)
    lora = gib(max_loras * lora_params(a, lora_rank) * dtype_bytes / tensor_parallel)
    per_seq = gib(kv_bytes_per_token(a, dtype_bytes, tensor_parallel) * seq_len)
    kv = per_seq * sequences
    return {"weights": weights, "lora": lora, "kv_per_sequence": per_seq, "kv": kv, "overhead": overhead_gib,
            "total": weights + lora + kv + overhead_gib}


def sequences_that_fit(serving: dict, budget_gib: float) -> int:
    """How many sequences' KV cache fit in `budget_gib` (the GPU's memory times vLLM's
    gpu_memory_utilization) beside the weights, LoRA slots and overhead of `serving`."""
    room = budget_gib - serving["weights"] - serving["lora"] - serving["overhead"]
    return max(0, int(room // serving["kv_per_sequence"])) if serving["kv_per_sequence"] > 0 else 0


def training_gib(a: Arch, *, seq: int, rank: int, workers: int, strategy: str, cpu_offload: bool,
                 gradient_checkpointing: bool, overhead_gib: float, weight_bytes: float = 2) -> dict:
    """Per GPU of one LoRA training worker at batch 1 and `seq` tokens."""
    n = max(1, workers)
    full = params(a) * weight_bytes
    # what FSDP / ZeRO-3 gathers at once: the unit being computed and the next (prefetch)
    root = a.vocab * a.hidden * (1 if a.tied_embeddings else 2)
    gathered = (max(layer_params(a), root) + layer_params(a)) * weight_bytes
    adapter = lora_params(a, rank) * ADAPTER_BYTES
    if strategy in SHARDED and cpu_offload:
        weights, adapter_state = min(full, gathered), lora_params(a, rank) * 4  # states on the host
    elif strategy in SHARDED:
        weights, adapter_state = min(full, full / n + gathered), adapter / n
    else:  # ddp: a whole copy per GPU (cpu_offload applies to fsdp / deepspeed only)
        weights, adapter_state = full, adapter
    layer = seq * (LAYER_HIDDEN_VALUES * a.hidden + LAYER_MLP_VALUES * a.intermediate) * 2  # bf16
    if gradient_checkpointing:  # one hidden state per layer kept, one layer recomputed at a time
        acts = a.layers * seq * a.hidden * 2 + layer
    else:
        acts = a.layers * layer
    logits = seq * a.vocab * LOGIT_BYTES
    parts = {"weights": gib(weights), "adapter": gib(adapter_state), "activations": gib(acts),
             "logits": gib(logits), "overhead": overhead_gib}
    return {**parts, "total": sum(parts.values())}


def attention_flops_per_token(a: Arch, seq: int) -> float:
    """Forward attention FLOPs per token averaged over a causal sequence of `seq` tokens:
    QK^T and AV over seq/2 keys on average, in every layer."""
    return 2 * 2 * a.layers * a.q_dim * (seq / 2)


def train_flops_per_token(a: Arch, seq: int) -> float:
    """LoRA training with gradient checkpointing: the forward, its recomputation and a
    backward without weight gradients for the frozen linears (3 x 2N), and attention's
    forward, recomputation and twice-as-costly backward (4 x)."""
    return 6 * params(a) + 4 * attention_flops_per_token(a, seq)


def training_gpu_hours(rows: float, tokens_per_row: float, epochs: float, a: Arch, tflops: float, mfu: float) -> float:
    """GPU-hours of `epochs` passes over `rows` rows of `tokens_per_row` tokens at `mfu` of
    a `tflops` peak."""
    flops = epochs * rows * tokens_per_row * train_flops_per_token(a, tokens_per_row)
    return flops / (tflops * 1e12 * mfu) / 3600
