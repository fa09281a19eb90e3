"""Print docs/cluster.md's memory tables: what one GPU needs to serve and to train the 7B,
8B and 70B-class models at the paper's lengths (32,768-token context, 16,384-token
training rows), from `estimate`'s functions (selflengthen/estimate/memory.py).

    python scripts/memory_table.py [--gpu-gib 80] [--utilization 0.9] [--sequences 32]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selflengthen.estimate import arch, memory  # noqa: E402

MODELS = [("Qwen2-7B / Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"), ("Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
          ("Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct"), ("Qwen2.5-72B", "Qwen/Qwen2.5-72B-Instruct")]
TRAINING = [("ddp, 1 worker", "ddp", 1, False), ("ZeRO-3, 4 workers", "deepspeed", 4, False),
            ("ZeRO-3, 8 workers", "deepspeed", 8, False), ("ZeRO-3 + CPU offload", "deepspeed", 8, True)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu-gib", type=float, default=80)
    p.add_argument("--utilization", type=float, default=0.9, help="engine.gpu_memory_utilization")
    p.add_argument("--sequences", type=int, default=32, help="sequences in flight per replica")
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--train-tokens", type=int, default=16384)
    a = p.parse_args()
    budget = a.gpu_gib * a.utilization
    print(f"Serving, bf16, per GPU ({a.sequences} sequences of {a.context:,} tokens per replica; "
          f"{a.gpu_gib:g} GiB x {a.utilization:g}):\n")
    print("| model | parameters | tensor parallel | weights | KV of one sequence | total for "
          f"{a.sequences} sequences | sequences that fit |")
    print("|---|---|---|---|---|---|---|")
    for label, name in MODELS:
        m = arch.KNOWN[name]
        for tp in (1, 2) if arch.params(m) < 2e10 else (4, 8):
            s = memory.serving_gib(m, dtype_bytes=2, tensor_parallel=tp, seq_len=a.context, sequences=a.sequences,
                                   max_loras=2, lora_rank=16, overhead_gib=2.0)
            print(f"| {label} | {arch.params(m) / 1e9:.2f}B | {tp} | {s['weights']:.1f} GiB | "
                  f"{s['kv_per_sequence']:.2f} GiB | {s['total']:.0f} GiB | {memory.sequences_that_fit(s, budget)} |")
    print(f"\nLoRA training (rank 16, all linear layers, bf16, gradient checkpointing), per GPU, "
          f"{a.train_tokens:,} tokens, batch 1:\n")
    print("| model | " + " | ".join(t[0] for t in TRAINING) + " |")
    print("|---|" + "---|" * len(TRAINING))
    for label, name in MODELS:
        m = arch.KNOWN[name]
        cells = [memory.training_gib(m, seq=a.train_tokens, rank=16, workers=w, strategy=s, cpu_offload=off,
                                     gradient_checkpointing=True, overhead_gib=2.0)["total"]
                 for _, s, w, off in TRAINING]
        print(f"| {label} | " + " | ".join(f"{c:.0f} GiB" for c in cells) + " |")


if __name__ == "__main__":
    main()
