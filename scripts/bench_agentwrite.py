"""AgentWrite throughput, both ways on one engine start, on the tiny model (or any model
preset / `model.path=`): every instruction in flight together (each one's steps in order)
vs one instruction at a time (`agentwrite.max_items_in_flight=1`), same instructions,
same seeds, printed as paragraphs per second with their ratio, and plan vs actual words.

    .venv/bin/python scripts/bench_agentwrite.py [--n 16] [--smoke] [KEY=VALUE ...]   (Hydra overrides)

The settings are the agentwrite verb's, composed and checked as `python -m selflengthen
agentwrite` does (the same overrides work here).
"""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from selflengthen import preflight
from selflengthen.agentwrite.write import agentwrite_all, plan_vs_actual
from selflengthen.cli import user_errors
from selflengthen.engines import Request
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.models.resolve import resolve_model

REPO = Path(__file__).resolve().parent.parent
# --smoke: the smallest measurement, to check that the script runs (the suite runs it)
SMOKE = ["agentwrite.plan.max_tokens=24", "agentwrite.write.max_tokens=8", "model.max_model_len=1024",
         "loop.sampling.max_tokens=256", "engine.cpu_memory_utilization=0.05"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="instructions (the shipped English seeds)")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest measurement, to check that the script runs: --n 2 " + " ".join(SMOKE))
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the agentwrite verb's config (KEY=VALUE)")
    a = p.parse_args()
    if a.smoke:
        a.n, a.overrides = 2, [*SMOKE, *a.overrides]
    cfg = preflight.composed("agentwrite", a.overrides)
    seeds = [json.loads(line) for line in (REPO / "selflengthen" / "seeds" / "en.jsonl").read_text().splitlines()
             if line.strip()][: a.n]
    items = [{"id": f"b{i}", "instruction": s["instruction"], "language": "en"} for i, s in enumerate(seeds)]
    model = resolve_model(cfg.model, cfg.paths.cache_dir)
    sampling = sampling_from(cfg.loop.sampling)

    async def both():
        out = {}
        async with serving(model, {}, cfg.model, cfg.engine, cfg.ray) as engine:
            await engine.complete(Request([{"role": "user", "content": "warm up"}]), sampling.with_max_tokens(4))
            for label, bound in (("all in flight", None), ("one at a time", 1)):
                acfg = cfg.agentwrite.model_copy(update={"max_items_in_flight": bound})
                out[label] = await agentwrite_all(engine, items, acfg, seed=0, sampling=sampling)
        return out

    results = asyncio.run(both())
    base = results["one at a time"][1]["paragraphs_per_second"]
    print(f"AgentWrite on {model}: {len(items)} instructions, plan max_tokens {cfg.agentwrite.plan.max_tokens}, "
          f"write max_tokens {cfg.agentwrite.write.max_tokens}")
    print(f"{'mode':<15} {'planned':>7} {'paragraphs':>10} {'seconds':>8} {'para/s':>7} {'tokens/s':>8} {'ratio':>6}")
    for label, (rows, stats) in results.items():
        tps = stats["tokens"]["completion"] / stats["seconds"]
        print(f"{label:<15} {stats['planned']:>7} {stats['steps_written']:>10} {stats['seconds']:>8.1f} "
              f"{stats['paragraphs_per_second']:>7.3f} {tps:>8.1f} {stats['paragraphs_per_second'] / base:>6.2f}")
    rows = results["all in flight"][0]
    pva = plan_vs_actual(rows)["paragraphs"]
    print(f"plan vs actual per paragraph (all in flight): n={pva['n']}, planned mean {pva['mean_planned']}, "
          f"written mean {pva['mean_actual']} words, ratio {pva['ratio']}, within 20%: {pva['within_20pct']}")


if __name__ == "__main__":
    with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
        main()
