"""The Self-Lengthen loop, driven from this process over Ray:

    for k in 1..N: the stages of pipeline/stages/__init__.py's STAGES, in order
    (today augment, generate, extend on one engine, then curate, guard, train)

The engine is opened once for each run of consecutive stages that need it (Stage.engine)
and shut down before the next stage that does not, so training has the GPUs to itself.

Iteration k generates with the adapters trained in iteration k-1 and trains new adapters
that continue from them. Every stage keeps one contract (pipeline/stage.py): it writes its
data, then its manifest with its settings' hash; a stage whose manifest exists is skipped
(other settings are refused), so re-running the same command resumes where it stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import ray
from omegaconf import OmegaConf

from selflengthen import config
from selflengthen.config import schema
from selflengthen.core import precision
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import workers
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.evaluation import in_run
from selflengthen.models.resolve import resolve_model
from selflengthen.pipeline import metrics, observe, stage, stages
from selflengthen.pipeline.stages import train
from selflengthen.store import artifacts
from selflengthen.store.runlock import RunLock
from selflengthen.store.runs import instruction_pool, previous_adapters
from selflengthen.store.seeds import load_seeds
from selflengthen.training import ray_train

log = logging.getLogger("selflengthen")


def start_run(settings: schema.Config) -> artifacts.RunPaths:
    """Create the run folder (its config.yaml: the run's settings, every key, as plain YAML),
    or check that an existing one was made with the same method."""
    paths = artifacts.RunPaths(Path(settings.paths.iterations_dir) / settings.run.name)
    if paths.config.exists():
        before = OmegaConf.to_container(OmegaConf.load(paths.config), resolve=True)
        changed = config.saved_method(before, str(paths.config)).changes(settings.method)
        if changed:
            raise UserError(
                f"run {settings.run.name!r} in {paths.root} was started with a different config "
                f"({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}); "
                f"resume it with the same settings or start another run with run.name=NEW_NAME")
    else:
        paths.root.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(settings.model_dump(mode="json")), paths.config)
    return paths


def engine_runs(stage_list) -> list[tuple[bool, tuple[stage.Stage, ...]]]:
    """The stages cut into maximal runs of consecutive stages alike in needing the engine:
    [(needs the engine, stages), ...], in order."""
    runs: list[tuple[bool, tuple[stage.Stage, ...]]] = []
    for each in stage_list:
        if runs and runs[-1][0] == each.engine:
            runs[-1] = (each.engine, runs[-1][1] + (each,))
        else:
            runs.append((each.engine, (each,)))
    return runs


def run_iteration(settings: schema.Config, paths: artifacts.RunPaths, k: int, model_path: str,
                  seeds: dict[str, list[str]]) -> dict:
    """Iteration k: its stages in order, each run of engine stages on one engine (started
    only when one of them is still to do); its metrics and manifest."""
    it = paths.iteration(k)
    inputs = stage.Inputs(it, settings.seed, tuple(settings.model.languages), model_path, previous_adapters(paths, k))
    timings: dict[str, float] = {}
    first_engine = True
    for engine, run in engine_runs(stages.STAGES):
        if not engine:
            run_async(run_stages(run, settings, inputs))
        elif not all(it.stage_done(s.name) for s in run):
            started = run_async(engine_stages(run, settings, paths, inputs, seeds, evaluate=first_engine))
            timings["engine_start"] = round(timings.get("engine_start", 0.0) + started["engine_start"], 1)
        first_engine = first_engine and not engine
    result = metrics.iteration_metrics(it, stages.names())
    result["seconds"].update(timings)
    artifacts.write_json(it.metrics, result)
    artifacts.write_json(it.manifest, {"iteration": k, "complete": True, "metrics": "metrics.json",
                                       "adapters": {r: str(it.adapter(r).relative_to(it.root)) for r in artifacts.ROLES},
                                       "model": model_path, "model_build": artifacts.model_build(model_path),
                                       "dtype": served_dtype(settings.model),
                                       "versions": artifacts.package_versions()})
    return result


async def engine_stages(run: tuple[stage.Stage, ...], settings: schema.Config, paths: artifacts.RunPaths,
                        inputs: stage.Inputs, seeds: dict[str, list[str]], *, evaluate: bool = True) -> dict:
    """A run of engine stages on one engine (one event loop for its whole life); for the
    iteration's first engine, the previous generator's evaluation first, on the same engine,
    when eval.every_iteration."""
    it, adapters = inputs.paths, inputs.adapters
    t0 = time.time()
    log.info("iteration %d: starting the %s engine on %s (adapters: %s)", it.k, settings.engine.kind, inputs.model_path,
             sorted(adapters) or "none")
    async with serving(inputs.model_path, adapters, settings.model, settings.engine, settings.ray) as engine:
        timings = {"engine_start": round(time.time() - t0, 1)}
        if evaluate and settings.eval.every_iteration:  # the previous generator (the base model first) is served
            with observe.stage(it.k - 1, "eval", engine, unit="item"):
                await in_run.evaluate_generator(in_run.EvalSetup.of(settings), paths, it.k - 1, engine,
                                                "generator" if adapters else None)
        pool = {} if it.stage_done("augment") else instruction_pool(seeds, paths, it.k)  # read only for augment
        served = replace(inputs, engine=engine, sampling=sampling_from(settings.loop.sampling),
                         rules=settings.loop.quality_rules(), pool=pool)
        await run_stages(run, settings, served)
    log.info("iteration %d: engine shut down", it.k)
    return timings


async def run_stages(run: tuple[stage.Stage, ...], settings: schema.Config, inputs: stage.Inputs) -> None:
    """The stages in order, each under the stage contract (done ones are skipped)."""
    for each in run:
        await stage.run_stage(each, settings, inputs)


def served_dtype(model: schema.Model) -> dict:
    """model.dtype as asked and as served here (auto: bf16 on a CPU that has it, see precision)."""
    on_gpu = int(ray.cluster_resources().get("GPU", 0)) > 0
    return {"requested": model.dtype, "served": precision.serving_dtype(model.dtype, on_gpu)}


def run(settings: schema.Config) -> artifacts.RunPaths:
    """The whole loop; returns the run's paths. Safe to call again: it resumes."""
    seeds = load_seeds(settings.seeds, settings.model.languages)
    if settings.ray.address:  # an unreachable cluster fails now, within ray.connect_timeout_s
        workers.check_reachable(settings.ray.address, settings.ray.connect_timeout_s)
    paths = artifacts.RunPaths(Path(settings.paths.iterations_dir) / settings.run.name)
    with RunLock(paths.root), observe.watching(settings, paths.root):  # one writer; status.json and trackers
        return _run_locked(settings, seeds)


def _run_locked(settings: schema.Config, seeds: dict[str, list[str]]) -> artifacts.RunPaths:
    paths = start_run(settings)
    started = time.time()
    model_path = None
    history = []
    for k in range(1, settings.iterations + 1):
        it = paths.iteration(k)
        if it.manifest.exists():
            log.info("iteration %d: complete, skipped", k)
            history.append(artifacts.read_json(it.metrics))
            continue
        if model_path is None:  # only when there is work: a finished run resumes instantly
            model_path = resolve_model(settings.model, settings.paths.cache_dir)
            workers.init_ray(settings.ray)
            ray_train.check_placement(settings.engine, list(train.role_configs(train.settings_of(settings)).values()))
        t0 = time.time()
        history.append(run_iteration(settings, paths, k, model_path, seeds))
        observe.log_finished(paths)
        w = history[-1]["words"]
        log.info("iteration %d done in %.0f s: initial mean %s words, extended mean %s words", k,
                 time.time() - t0, w["initial"]["mean"], w["extended"]["mean"])
    if model_path is None:  # every iteration was already complete
        model_path = artifacts.read_json(paths.iteration(1).manifest)["model"]
    if settings.eval.every_iteration:  # normally only the last iteration's generator is left
        in_run.catch_up(in_run.EvalSetup.of(settings), paths, model_path, settings.iterations)
    observe.log_finished(paths)  # the last evaluation (and any iteration not yet logged)
    artifacts.write_json(paths.manifest, {
        "run": settings.run.name, "model": settings.model.path, "model_resolved": model_path,
        "model_build": artifacts.model_build(model_path),
        "iterations_completed": len(history), "seconds_this_invocation": round(time.time() - started, 1),
        "tokens": {key: sum((h.get("tokens") or {}).get(key) or 0 for h in history)
                   for key in ("requests", "prompt_tokens", "completion_tokens", "seconds")},
        "config": settings.model_dump(mode="json"), "versions": artifacts.package_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return paths
