"""Throughput measured by a previous run (`estimate.from_run=iterations/NAME`): each
finished iteration's manifests/engine_usage.json records, per generation stage, the
generated tokens and the stage's wall time over its replicas (loop.record_engine_usage);
summed over the iterations and divided by the GPUs that served them (replicas x
engine.tensor_parallel_size of the run's config), that is generated tokens per second
per GPU, per stage (the loop's engine stages, which the caller names)."""
from __future__ import annotations

from pathlib import Path

from selflengthen import config
from selflengthen.core.errors import UserError
from selflengthen.store import artifacts


def run_folder(value: str, iterations_dir: str) -> Path:
    """A run folder, or a run name under paths.iterations_dir."""
    folder = Path(value).expanduser()
    if not folder.is_dir() and (Path(iterations_dir).expanduser() / value).is_dir():
        folder = Path(iterations_dir).expanduser() / value
    if not folder.is_dir():
        raise UserError(f"estimate.from_run={value}: no such run folder; give a run folder (iterations/NAME) "
                        f"or a run name under {iterations_dir}/")
    return folder


def throughput(folder: Path, stages: list[str]) -> dict:
    """{"per_stage": {stage: tokens/s per GPU}, "all": over every stage, and what it was
    measured on (run, model, iterations, device)}, over `stages` (the engine stages); a
    UserError when the folder holds no recorded stage."""
    paths = artifacts.RunPaths(folder)
    tp = 1
    model = None
    if paths.config.is_file():
        saved = config.saved_config(paths.config)
        tp = int(((saved.get("engine") or {}).get("tensor_parallel_size")) or 1)
        model = (saved.get("model") or {}).get("path")
    sums = {s: {"tokens": 0, "gpu_seconds": 0.0, "seconds": 0.0} for s in stages}
    iterations, devices = [], set()
    for it in paths.iterations():
        usage_file = it.stage_manifest("engine_usage")
        if not usage_file.is_file():
            continue
        usage = artifacts.read_json(usage_file)
        recorded = False
        for stage in stages:
            u = usage.get(stage)
            if not isinstance(u, dict) or not u.get("seconds") or not u.get("completion_tokens"):
                continue
            sums[stage]["tokens"] += u["completion_tokens"]
            sums[stage]["seconds"] += u["seconds"]
            sums[stage]["gpu_seconds"] += u["seconds"] * int(u.get("replicas") or 1) * tp
            recorded = True
        if recorded:
            iterations.append(it.k)
        for role in artifacts.ROLES:
            info = it.stage_manifest(f"train_{role}")
            if info.is_file():
                devices.add(artifacts.read_json(info).get("device"))
    per_stage = {s: round(v["tokens"] / v["gpu_seconds"], 1) for s, v in sums.items() if v["gpu_seconds"] > 0}
    gpu_seconds = sum(v["gpu_seconds"] for v in sums.values())
    if not per_stage:
        raise UserError(f"estimate.from_run={folder}: no measured stage in it (no iter_K/manifests/engine_usage.json "
                        f"with generated tokens and seconds); finish one iteration of that run first, or give "
                        f"estimate.tokens_per_s_per_gpu=N instead")
    return {"per_stage": per_stage, "all": round(sum(v["tokens"] for v in sums.values()) / gpu_seconds, 1),
            "run": str(folder), "model": model, "iterations": iterations,
            "tensor_parallel_size": tp, "device": "cpu" if devices == {"cpu"} else ("cuda" if "cuda" in devices
                                                                                    else "unknown"),
            "measured": {s: v for s, v in sums.items() if v["gpu_seconds"] > 0}}


def rl_job(folder: Path) -> dict:
    """What a finished `rl` job measured (estimate.verb=rl with estimate.from_run=rl/NAME):
    its mean answer in tokens over the logged steps (steps.jsonl's completions/mean_length)
    and its generated tokens per second per GPU over the whole training, generation and
    optimizer together (manifest.json's train: steps x workers x num_generations x
    prompts_per_step answers in `seconds` on `world_size` workers); a UserError when the
    folder holds no finished rl job."""
    manifest_file, steps_file = folder / "manifest.json", folder / "steps.jsonl"
    manifest = artifacts.read_json(manifest_file) if manifest_file.is_file() else {}
    if manifest.get("verb") != "rl" or not steps_file.is_file():
        raise UserError(f"estimate.from_run={folder}: not a finished rl job (no manifest.json of verb rl with "
                        f"steps.jsonl beside it); give a finished rl/NAME, or drop estimate.from_run to assume "
                        f"estimate.rl_completion_fraction")
    lengths = [s["completions/mean_length"] for s in artifacts.read_jsonl(steps_file)
               if isinstance(s.get("completions/mean_length"), (int, float))]
    train = manifest.get("train") or {}
    if not lengths or not train.get("seconds"):
        raise UserError(f"estimate.from_run={folder}: its steps.jsonl logs no completions/mean_length (or its "
                        f"manifest no training seconds); drop estimate.from_run to assume "
                        f"estimate.rl_completion_fraction")
    world = int(train.get("world_size") or 1)
    answers = int(train["num_generations"]) * int(train["prompts_per_step"]) * world
    return {"run": str(folder), "model": manifest.get("model"), "device": train.get("device"), "steps": len(lengths),
            "mean_completion": sum(lengths) / len(lengths),
            "tokens_per_s_per_gpu": sum(lengths) * answers / float(train["seconds"]) / world}
