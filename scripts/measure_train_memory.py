"""Measure one GPU's peak memory and throughput of a LoRA training step at the paper's
lengths, on a model of a known preset's shape with random weights (nothing downloaded),
to check `estimate`'s training memory and FLOPs arithmetic (selflengthen/estimate/).

    python scripts/measure_train_memory.py [--models Qwen/Qwen2.5-7B-Instruct ...] [--lengths 4096 8192 16384]

The step is what the trainer does on a GPU with the default train.* settings: bf16
weights, a rank-16 LoRA on all linear layers (fp32 adapter, AdamW), gradient
checkpointing, batch 1, causal-LM loss over the whole sequence. Prints, per model and
length: the measured peak allocated memory and the estimate's, and tokens/s with the
model FLOPs utilization (MFU) that implies at --peak-tflops. Needs a CUDA GPU with torch,
transformers and peft; not a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selflengthen.estimate import arch as archs, memory  # noqa: E402

GIB = 1024 ** 3


def build(a: archs.Arch):
    import torch
    from transformers import LlamaConfig, Qwen2Config, AutoModelForCausalLM

    kind = Qwen2Config if a.qkv_bias else LlamaConfig
    conf = kind(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                head_dim=a.head_dim, tie_word_embeddings=a.tied_embeddings, max_position_embeddings=32768)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"])
    p.add_argument("--lengths", nargs="+", type=int, default=[4096, 8192, 16384])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    args = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'model':34} {'tokens':>7} {'peak GiB':>9} {'estimate':>9} {'tok/s':>8} {'MFU':>6}")
    for name in args.models:
        a = archs.KNOWN[name]
        model = build(a)
        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.train()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        static = torch.cuda.memory_allocated()
        for s in args.lengths:
            ids = torch.randint(0, a.vocab, (1, s), device="cuda")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for step in range(args.steps + 1):
                t0 = time.time()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                if step:  # the first step allocates the optimizer state and warms the kernels
                    times.append(time.time() - t0)
            peak = torch.cuda.max_memory_allocated()
            tok_s = s / (sum(times) / len(times))
            est = memory.training_gib(a, seq=s, rank=args.rank, workers=1, strategy="ddp", cpu_offload=False,
                                      gradient_checkpointing=True, overhead_gib=0.0)
            mfu = tok_s * memory.train_flops_per_token(a, s) / (args.peak_tflops * 1e12)
            print(f"{name:34} {s:7d} {peak / GIB:9.2f} {est['total']:9.2f} {tok_s:8.0f} {mfu:6.2f}"
                  f"   (weights+adapter+optimizer {static / GIB:.2f} GiB)", flush=True)
        del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
