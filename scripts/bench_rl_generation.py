"""Generation for GRPO on this machine, the two paths `rl` could take: TRL's own (transformers
`generate` on the policy with its LoRA, one batch holding a step's completions, as
GRPOTrainer does with use_vllm=False) against the project's in-process vLLM engine
(engine.lora_serving=merged with merged_swap=reload: the adapter merged into the weights,
which are reloaded in place when they change, as they would after every optimizer step).
Prints, per model, generated tokens/s of each path, the vLLM path's cost of one weight
update (the first request after switching to another adapter: merge + reload), and the
vLLM path's tokens/s per step once that update is paid every step.

    .venv/bin/python scripts/bench_rl_generation.py [--models tiny,smollm2] [--n 16] [--max-tokens 256] [--repeat 2]
    .venv/bin/python scripts/bench_rl_generation.py --smoke    # tiny, 4 requests of 16 tokens, one round

Each round measures both paths, in alternating order, so that a drift of the machine's speed
falls on both; the table gives medians over rounds. Prompts are the shipped English seed
instructions, sampled at temperature 1.0 (GRPO's default).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_dtype import prompts, rounds_per_model, serving_settings, start_ray  # noqa: E402

from selflengthen.engines import Request, Sampling, complete_all  # noqa: E402
from selflengthen.engines.factory import serving  # noqa: E402

PATHS = ("trl", "vllm")


def trl_generate(model: str, adapter: str, n: int, max_tokens: int) -> dict:
    """TRL's path: one padded batch of n prompts through the LoRA policy's generate."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), adapter)
    texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in prompts(n)]
    batch = tok(texts, return_tensors="pt", padding=True)
    eos = {tok.eos_token_id, *([policy.generation_config.eos_token_id] if isinstance(
        policy.generation_config.eos_token_id, int) else policy.generation_config.eos_token_id or [])}
    with torch.no_grad():
        policy.generate(**batch, do_sample=True, max_new_tokens=4, pad_token_id=tok.pad_token_id)  # warm-up
        started = time.perf_counter()
        out = policy.generate(**batch, do_sample=True, temperature=1.0, max_new_tokens=max_tokens,
                              pad_token_id=tok.pad_token_id)
        seconds = time.perf_counter() - started
    tokens = 0
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos]
        tokens += ends[0] + 1 if ends else len(row)
    return {"tokens_per_s": tokens / seconds, "update_s": 0.0, "step_tokens_per_s": tokens / seconds}


def vllm_generate(model: str, adapters: dict[str, str], n: int, max_tokens: int) -> dict:
    """The in-process vLLM engine, merged serving with in-place reloads."""
    model_cfg, engine_cfg, ray_cfg = serving_settings(model, "float32", lora_serving="merged", merged_swap="reload",
                                                      cpu_memory_utilization=0.1)  # a shared machine
    samp = Sampling(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_tokens=max_tokens)
    other = [Request(prompts(1)[0].messages, adapter="extender")]

    async def go():
        async with serving(model, adapters, model_cfg, engine_cfg, ray_cfg) as engine:
            await complete_all(engine, prompts(2), samp.with_max_tokens(4))  # merge + engine start
            started = time.perf_counter()
            done = await complete_all(engine, prompts(n), samp)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            await complete_all(engine, other, samp.with_max_tokens(1))  # new weights: merged, reloaded in place
            return sum(c.completion_tokens for c in done), seconds, time.perf_counter() - started

    tokens, seconds, update = asyncio.run(go())
    return {"tokens_per_s": tokens / seconds, "update_s": update, "step_tokens_per_s": tokens / (seconds + update)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--n", type=int, default=16, help="completions per step (prompts x num_generations)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny, 4 requests of 16 tokens, one round")
    a = p.parse_args()
    if a.smoke:
        a.models, a.n, a.max_tokens, a.repeat = "tiny", 4, 16, 1
    start_ray()
    print(f"{a.n} completions x up to {a.max_tokens} tokens per step, temperature 1.0, {a.repeat} round(s), medians")
    print(f"{'model':<10} {'path':<6} {'tokens/s':>9} {'update s':>9} {'tokens/s per step':>18}")

    def measure(model, adapters, path):
        if path == "trl":
            return trl_generate(model, adapters["generator"], a.n, a.max_tokens)
        return vllm_generate(model, adapters, a.n, a.max_tokens)

    for name, results in rounds_per_model(a.models, PATHS, a.repeat, measure):
        for path in PATHS:
            med = {k: statistics.median(r[k] for r in results[path]) for k in results[path][0]}
            print(f"{name:<10} {path:<6} {med['tokens_per_s']:>9.1f} {med['update_s']:>9.2f} "
                  f"{med['step_tokens_per_s']:>18.1f}")


if __name__ == "__main__":
    main()
