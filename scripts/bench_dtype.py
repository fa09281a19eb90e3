"""float32 against bfloat16 on this CPU, in the loop's own engine layout: the vLLM engine
pool (a Ray actor, vLLM-CPU in one process as engine.cpu_single_process makes it) with both
LoRA adapters of an iteration loaded (generator and extender, rank 16 on all linear layers,
as train.rank) and every request sent through the generator adapter, as iteration 2's
generate stage does. Prints generated tokens/s of each dtype side by side and their ratio.

    .venv/bin/python scripts/bench_dtype.py [--models tiny,smollm2] [--n 32] [--max-tokens 256] [--repeat 2]

Each round starts a fresh engine per dtype, in alternating order, so that a drift of the
machine's speed falls on both sides; the table gives the medians over rounds. Prompts are
the shipped English seed instructions (long-writing tasks), so most requests run to
--max-tokens; the share that did is printed, since a batch's time is that of its longest.
`model.dtype=auto` picks bfloat16 only where the CPU has AMX or AVX-512-BF16 (precision.py):
the header says whether this one does.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selflengthen import preflight  # noqa: E402
from selflengthen.cli import user_errors  # noqa: E402
from selflengthen.config import schema  # noqa: E402
from selflengthen.core import precision  # noqa: E402
from selflengthen.engines import workers  # noqa: E402
from selflengthen.engines import Request, Sampling, complete_all  # noqa: E402
from selflengthen.engines.replicas import EnginePool  # noqa: E402
from selflengthen.models.resolve import resolve_model  # noqa: E402

DTYPES = ("float32", "bfloat16")


# --smoke: the smallest measurement, to check that a serving benchmark runs (the suite runs it)
SMOKE = {"models": "tiny", "n": 2, "max_tokens": 8, "repeat": 1}
SMOKE_OVERRIDES = ["engine.cpu_memory_utilization=0.05"]  # a small KV cache: a test worker beside it


def bench_args(doc: str, n: int = 32, max_tokens: int = 256, dtype: bool = True) -> argparse.Namespace:
    """The serving benchmarks' command line: --models, --dtype (unless the sides are dtypes),
    --n, --max-tokens, --repeat, --smoke, and Hydra overrides of the run's config."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2, or model folders")
    if dtype:
        p.add_argument("--dtype", default="auto", help="model.dtype (auto: bf16 on a CPU that has it)")
    p.add_argument("--n", type=int, default=n, help="requests per measurement")
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--repeat", type=int, default=2, help="rounds; each measures both sides")
    p.add_argument("--smoke", action="store_true", help="the smallest measurement, to check that the script runs: "
                   + " ".join([*(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()), *SMOKE_OVERRIDES]))
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run's config (KEY=VALUE)")
    a = p.parse_args()
    if a.smoke:
        vars(a).update(SMOKE)
    OVERRIDES[:] = [*SMOKE_OVERRIDES, *a.overrides] if a.smoke else a.overrides
    return a


def start_ray() -> None:
    """Ray as the run's config asks (by default a local instance on all of this machine's cores)."""
    workers.init_ray(preflight.composed("run", []).ray)


def rounds_per_model(models: str, sides: tuple[str, ...], repeat: int, measure_one):
    """(name, {side: results}) for each model of `--models`: its folder and two fresh adapters
    made, then `measure_one(model, adapters, side)` over alternating rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in models.split(",") if m.strip()]:
            model = model_folder(name)
            SERVED[model] = name
            adapters = lora_adapters(model, Path(tmp) / name)
            yield name, alternating_rounds(sides, repeat, lambda side: measure_one(model, adapters, side))


PRESETS = {"tiny": "model=tiny", "smollm2": "model=smollm2-135m"}  # --models names: conf/model/ presets
SERVED: dict[str, str] = {}  # model folder -> its --models name
OVERRIDES: list[str] = []  # the command line's KEY=VALUE (bench_args)


def model_override(name: str) -> str:
    """The Hydra override that selects `name` of --models: a preset, or a model folder."""
    return PRESETS.get(name, f"model.path={name}")


def model_folder(name: str) -> str:
    """The folder vLLM loads for `name` (the embedded ones built into paths.cache_dir once)."""
    cfg = preflight.composed("run", [model_override(name)])
    return resolve_model(cfg.model, cfg.paths.cache_dir)


def lora_adapters(model: str, out: Path) -> dict[str, str]:
    """Two fresh rank-16 all-linear adapters (random B, so they change the output), as the
    loop serves from iteration 2 on."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for i, role in enumerate(("generator", "extender")):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        peft = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                               init_lora_weights=False, task_type="CAUSAL_LM"))
        peft.save_pretrained(out / role)
        adapters[role] = str(out / role)
    return adapters


def settings(model: str, dtype: str, *overrides: str) -> schema.Config:
    """The run's typed settings, composed as `python -m selflengthen run` composes them, for
    `model` (a folder model_folder made) in `dtype`, with this benchmark's engine sizes and
    the command line's Hydra overrides on top."""
    return preflight.composed("run", [model_override(SERVED.get(model, model)), "model.max_model_len=2048",
                                      f"model.dtype={dtype}", "loop.sampling.max_tokens=1024",
                                      f"engine.num_cpus_per_replica={os.cpu_count()}",
                                      "engine.cpu_memory_utilization=0.4", "engine.max_lora_rank=16",
                                      *OVERRIDES, *overrides])


def serving_settings(model: str, dtype: str, **engine) -> tuple:
    """(model, engine, ray) typed settings for factory.serving on `model`, with `engine` keys
    set (lora_serving=..., merged_swap=...)."""
    cfg = settings(model, dtype, *(f"engine.{key}={value}" for key, value in engine.items()))
    return cfg.model, cfg.engine, cfg.ray


def prompts(n: int) -> list[Request]:
    rows = [json.loads(line) for line in
            files("selflengthen.seeds").joinpath("en.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Request([{"role": "user", "content": rows[i % len(rows)]["instruction"]}], adapter="generator")
            for i in range(n)]


def measure(model: str, adapters: dict[str, str], dtype: str, a) -> tuple[float, float]:
    """(tokens/s, share of requests that ran to max_tokens) for one fresh engine."""
    cfg = settings(model, dtype)
    pool = EnginePool(model, adapters, cfg.engine, cfg.model)
    samp = Sampling(max_tokens=a.max_tokens, stop=("---",))
    try:
        async def go():
            await complete_all(pool, prompts(2), samp.with_max_tokens(8))  # warm-up: adapters loaded
            started = time.perf_counter()
            done = await complete_all(pool, prompts(a.n), samp)
            return done, time.perf_counter() - started

        done, seconds = asyncio.run(go())
    finally:
        pool.shutdown()
    tokens = sum(c.completion_tokens for c in done)
    return tokens / seconds, sum(c.finish_reason == "length" for c in done) / len(done)


def alternating_rounds(sides: tuple[str, ...], repeat: int, measure_one) -> dict[str, list]:
    """`measure_one(side)` for every side in each of `repeat` rounds, the order reversed every
    other round, so that a drift of the machine's speed falls on both; results per side."""
    results: dict[str, list] = {side: [] for side in sides}
    for r in range(repeat):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            results[side].append(measure_one(side))
    return results


def main() -> None:
    a = bench_args(__doc__, dtype=False)
    start_ray()
    print(f"CPU computes bf16 natively: {precision.cpu_has_native_bf16()} (model.dtype=auto serves "
          f"{precision.serving_dtype('auto', on_gpu=False)}); {a.n} requests x {a.max_tokens} tokens, "
          f"generator adapter of 2 loaded, {a.repeat} rounds, medians")
    print(f"{'model':<10} {'float32 tok/s':>14} {'bfloat16 tok/s':>15} {'bf16/fp32':>10} {'at cap':>12}")
    for name, per in rounds_per_model(a.models, DTYPES, a.repeat,
                                      lambda model, adapters, dtype: measure(model, adapters, dtype, a)):
        runs = {d: [tps for tps, _ in per[d]] for d in DTYPES}
        caps = {d: [cap for _, cap in per[d]] for d in DTYPES}
        fp32, bf16 = (statistics.median(runs[d]) for d in DTYPES)
        print(f"{name:<10} {fp32:>14.0f} {bf16:>15.0f} {bf16 / fp32:>9.2f}x "
              f"{statistics.mean(caps['float32']):>5.0%}/{statistics.mean(caps['bfloat16']):<5.0%}", flush=True)


if __name__ == "__main__":
    with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
        main()
