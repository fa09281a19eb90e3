"""LoRA adapters served as adapters against merged into the weights (`engine.lora_serving`),
on this machine, in the loop's own engine layout: the engine pool of engines/factory.py
with an iteration's two adapters (generator and extender, rank 16 on all linear layers, as
train.rank; random, so they change the output) and every request sent through the
generator, as iteration 2's generate stage does. Prints, per model, generated tokens/s of
each layout side by side with their ratio, and what starting each cost (the merged layout
merges the adapter and starts an engine on it; it does so again each time the loop moves
to another role).

    .venv/bin/python scripts/bench_lora_serving.py [--models tiny,smollm2] [--dtype auto] [--n 32] [--max-tokens 256] [--repeat 2]

Each round measures both layouts on fresh engines, in alternating order, so that a drift of
the machine's speed falls on both; the table gives medians over rounds.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_dtype import bench_args, prompts, rounds_per_model, serving_settings, start_ray  # noqa: E402

from selflengthen.core import precision  # noqa: E402
from selflengthen.cli import user_errors  # noqa: E402
from selflengthen.engines import Sampling, complete_all  # noqa: E402
from selflengthen.engines.factory import serving  # noqa: E402

LAYOUTS = ("adapters", "merged")


def measure(model: str, adapters: dict[str, str], layout: str, a) -> tuple[float, float]:
    """(generated tokens/s, seconds from opening to the first answer) for one fresh engine."""
    model_cfg, engine_cfg, ray_cfg = serving_settings(model, a.dtype, lora_serving=layout)
    samp = Sampling(max_tokens=a.max_tokens, stop=("---",))

    async def go():
        opened = time.perf_counter()
        async with serving(model, adapters, model_cfg, engine_cfg, ray_cfg) as engine:
            await complete_all(engine, prompts(2), samp.with_max_tokens(8))  # merged: merge + engine start here
            ready = time.perf_counter() - opened
            started = time.perf_counter()
            done = await complete_all(engine, prompts(a.n), samp)
            return done, time.perf_counter() - started, ready

    done, seconds, ready = asyncio.run(go())
    return sum(c.completion_tokens for c in done) / seconds, ready


def main() -> None:
    a = bench_args(__doc__)
    start_ray()
    print(f"model.dtype={a.dtype} (served as {precision.serving_dtype(a.dtype, on_gpu=False)}); {a.n} requests x "
          f"{a.max_tokens} tokens through the generator adapter (2 loaded), {a.repeat} rounds, medians")
    print(f"{'model':<10} {'adapters tok/s':>15} {'merged tok/s':>13} {'merged/adapters':>16} "
          f"{'start s (adapters/merged)':>26}")
    for name, per in rounds_per_model(a.models, LAYOUTS, a.repeat,
                                      lambda model, adapters, layout: measure(model, adapters, layout, a)):
        speed = {x: [tps for tps, _ in per[x]] for x in LAYOUTS}
        start = {x: [ready for _, ready in per[x]] for x in LAYOUTS}
        lora, merged = (statistics.median(speed[x]) for x in LAYOUTS)
        starts = "/".join(f"{statistics.median(start[x]):.0f}" for x in LAYOUTS)
        print(f"{name:<10} {lora:>15.0f} {merged:>13.0f} {merged / lora:>15.2f}x {starts:>26}", flush=True)


if __name__ == "__main__":
    with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
        main()
