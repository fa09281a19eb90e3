"""Merged serving's swaps between models (`engine.merged_swap`): the live engine restarted on
the next model against the next model's weights reloaded into it in place, on this machine,
in the loop's own engine layout (engines/factory.py's merged pool, an iteration's two random
rank-16 adapters). Each measurement is one iteration's stage order (the generator's held-out
evaluation, augment on the base model, generate, extend: three swaps after the first start),
a few short seeded requests per stage. Prints, per model, the seconds of that sequence for
each side with their ratio, and whether both sides wrote the same texts (the reloaded
weights are the started ones: they should).

    .venv/bin/python scripts/bench_merged_swap.py [--models tiny,smollm2] [--dtype auto] [--n 8] [--max-tokens 32] [--repeat 2]

Each round measures both sides on fresh pools, in alternating order, so that a drift of the
machine's speed falls on both; the table gives medians over rounds.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_dtype import bench_args, prompts, rounds_per_model, serving_settings, start_ray  # noqa: E402

from selflengthen.cli import user_errors  # noqa: E402
from selflengthen.engines import Sampling, complete_all  # noqa: E402
from selflengthen.engines.factory import serving  # noqa: E402

SIDES = ("restart", "reload")
STAGES = ("generator", None, "generator", "extender")  # eval, augment, generate, extend


def measure(model: str, adapters: dict[str, str], side: str, a) -> tuple[float, list[str]]:
    """(seconds from opening the pool to the last stage's last answer, the texts written)."""
    model_cfg, engine_cfg, ray_cfg = serving_settings(model, a.dtype, lora_serving="merged", merged_swap=side)
    sampling = Sampling(max_tokens=a.max_tokens, stop=("---",))
    asked = [replace(r, seed=i) for i, r in enumerate(prompts(a.n))]

    async def go():
        started, texts = time.perf_counter(), []
        async with serving(model, adapters, model_cfg, engine_cfg, ray_cfg) as engine:
            for role in (STAGES[:2] if a.smoke else STAGES):  # --smoke: one swap
                done = await complete_all(engine, [replace(r, adapter=role) for r in asked], sampling)
                texts += [c.text for c in done]
        return time.perf_counter() - started, texts

    return asyncio.run(go())


def main() -> None:
    a = bench_args(__doc__, n=8, max_tokens=32)
    start_ray()
    stages = "the first two of an iteration's stages (eval, augment: 1 swap)" if a.smoke else \
        "an iteration's stages (eval, augment, generate, extend: 3 swaps)"
    print(f"model.dtype={a.dtype}; {stages}, {a.n} requests x "
          f"{a.max_tokens} tokens each, {a.repeat} rounds, medians")
    print(f"{'model':<10} {'restart s':>10} {'reload s':>9} {'restart/reload':>15} {'same texts':>11}")
    for name, per in rounds_per_model(a.models, SIDES, a.repeat,
                                      lambda model, adapters, side: measure(model, adapters, side, a)):
        restart, reload = (statistics.median(s for s, _ in per[x]) for x in SIDES)
        same = sum(t1 == t2 for t1, t2 in zip(per["restart"][0][1], per["reload"][0][1]))
        print(f"{name:<10} {restart:>10.1f} {reload:>9.1f} {restart / reload:>14.2f}x "
              f"{same:>5}/{len(per['reload'][0][1])}", flush=True)


if __name__ == "__main__":
    with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
        main()
