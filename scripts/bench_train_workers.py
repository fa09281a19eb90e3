"""Training wall time of one adapter with train.workers=1 (one Ray task) vs train.workers=2
(a Ray Train TorchTrainer of two gloo workers), same data, same Ray instance, on the tiny
model (or any `model.path=`). Prints each one's wall time (launch to saved adapter), the
time inside the trainer (model load, tokenization, steps, save: rank 0's `seconds`), the
rest (process start, imports, Ray Train's worker group), the optimizer steps, and the
wall-time ratio against the first.

    .venv/bin/python scripts/bench_train_workers.py [--examples 64] [--smoke] [KEY=VALUE ...]   (Hydra overrides)

The settings are the run's, composed and checked as `python -m selflengthen run` does (the
same overrides work here), with one epoch and no checkpoints.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray

from selflengthen import preflight
from selflengthen.cli import user_errors
from selflengthen.engines import workers
from selflengthen.models.resolve import resolve_model
from selflengthen.training import ray_train

REPO = Path(__file__).resolve().parent.parent


def sft_rows(n: int) -> list[dict]:
    words = "the module returns a list of values for each call and the object keeps its state".split()
    return [{"messages": [{"role": "user", "content": f"Write about topic number {i}."},
                          {"role": "assistant", "content": " ".join(words[(i + j) % len(words)]
                                                                  for j in range(150 + i % 50))}]}
            for i in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=64, help="SFT examples (~200-300 tokens each)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--smoke", action="store_true",
                   help="the smallest measurement, to check that the script runs: --examples 4 --workers 1 "
                        "train.max_steps=1")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run's config (KEY=VALUE)")
    a = p.parse_args()
    if a.smoke:
        a.examples, a.workers, a.overrides = 4, [1], ["train.max_steps=1", *a.overrides]
    cfg = preflight.composed("run", ["train.epochs=1", "train.save_every_steps=0", *a.overrides])
    model = resolve_model(cfg.model, cfg.paths.cache_dir)
    workers.init_ray(cfg.ray)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(a.examples)), encoding="utf-8")
        for count in a.workers:  # (`workers` is the module)
            tcfg = workers.with_cpu_threads({**cfg.train.model_dump(), "model_dtype": cfg.model.dtype, "workers": count})
            gpus, _ = ray_train.placement([tcfg])
            started = time.time()
            info = ray.get(ray_train.launch(model, str(data), str(Path(tmp) / f"adapter-{count}"), None, tcfg,
                                            int(cfg.seed), gpus=gpus))
            rows.append((count, time.time() - started, info["seconds"], info["steps"]))
    base = rows[0][1]
    print(f"{'workers':>7} {'wall s':>8} {'trainer s':>9} {'start-up s':>10} {'steps':>6} {'wall vs first':>13}")
    for count, wall, inside, steps in rows:  # start-up: processes, imports, Ray Train's worker group
        print(f"{count:>7} {wall:>8.1f} {inside:>9.1f} {wall - inside:>10.1f} {steps:>6} {wall / base:>12.2f}x")
    print(f"({a.examples} examples, 1 epoch, per-device batch {cfg.train.per_device_batch_size}, "
          f"{cfg.train.num_cpus:g} CPU(s) per worker, model {cfg.model.name})")


if __name__ == "__main__":
    with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
        main()
