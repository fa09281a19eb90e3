"""The Self-Lengthen loop, driven from this process over Ray:

    for k in 1..N: augment, generate, extend (one vLLM engine pool), curate, train

Iteration k generates with the adapters trained in iteration k-1 and trains new adapters
that continue from them. Every stage writes its data, then its manifest; a stage whose
manifest exists is skipped, so re-running the same command resumes where it stopped.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import ray
from omegaconf import DictConfig, OmegaConf

from selflengthen import config
from selflengthen.config import schema
from selflengthen.core import precision
from selflengthen.core.errors import UserError, run_async
from selflengthen.core.quality import QualityCheck
from selflengthen.engines import merge_usage, usage_delta, workers
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.evaluation import in_run
from selflengthen.models.resolve import resolve_model
from selflengthen.pipeline import metrics, observe
from selflengthen.pipeline.stages import augment, curate, generate, synth
from selflengthen.store import artifacts
from selflengthen.store.runlock import RunLock
from selflengthen.store.runs import instruction_pool, previous_adapters
from selflengthen.store.seeds import load_seeds
from selflengthen.training import ray_train, sft as train

log = logging.getLogger("selflengthen")


def start_run(settings: schema.Config, cfg: DictConfig) -> artifacts.RunPaths:
    """Create the run folder (its config.yaml: the composed config, as plain YAML), or check
    that an existing one was made with the same method."""
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
        OmegaConf.save(cfg, paths.config, resolve=True)
    return paths


def run_iteration(settings: schema.Config, cfg: DictConfig, paths: artifacts.RunPaths, k: int, model_path: str,
                  seeds: dict[str, list[str]]) -> dict:
    it = paths.iteration(k)
    adapters = previous_adapters(paths, k)
    timings: dict[str, float] = {}
    if not all(it.stage_done(s) for s in ("augment", "generate", "extend")):
        timings = run_async(generation_stages(settings, cfg, paths, it, model_path, adapters, seeds))
    if not it.stage_done("curate"):
        curate.run(settings.loop.curate, settings.seed, it)
    if not it.stage_done("train"):
        log.info("iteration %d: train both adapters", k)
        with observe.stage(k, "train"):  # progress, status.json and the trackers
            train_both(cfg, it, model_path, adapters)
    result = metrics.iteration_metrics(it)
    result["seconds"].update(timings)
    artifacts.write_json(it.metrics, result)
    artifacts.write_json(it.manifest, {"iteration": k, "complete": True, "metrics": "metrics.json",
                                       "adapters": {r: str(it.adapter(r).relative_to(it.root)) for r in artifacts.ROLES},
                                       "model": model_path, "model_build": artifacts.model_build(model_path),
                                       "dtype": served_dtype(cfg),
                                       "versions": artifacts.package_versions()})
    return result


async def generation_stages(settings: schema.Config, cfg: DictConfig, paths: artifacts.RunPaths, it: artifacts.IterationPaths,
                            model_path: str, adapters: dict[str, str], seeds: dict[str, list[str]]) -> dict:
    """Augment, generate and extend on one engine (one event loop for its whole life)."""
    sampling = sampling_from(settings.loop.sampling)
    rules = settings.loop.quality_rules()
    t0 = time.time()
    log.info("iteration %d: starting the %s engine on %s (adapters: %s)", it.k, cfg.engine.kind, model_path,
             sorted(adapters) or "none")
    async with serving(model_path, adapters, settings.model, settings.engine, settings.ray) as engine:
        timings = {"engine_start": round(time.time() - t0, 1)}
        if cfg.eval.every_iteration:  # the previous generator (the base model first) is served here already
            with observe.stage(it.k - 1, "eval", engine):
                await in_run.evaluate_generator(cfg, paths, it.k - 1, engine, "generator" if adapters else None)
        stage_runs = {
            "augment": lambda: augment.run(cfg, it, engine, instruction_pool(seeds, paths, it.k), sampling),
            "generate": lambda: generate.run(cfg, it, engine, sampling, QualityCheck(rules),
                                             "generator" if adapters else None),
            "extend": lambda: synth.run(cfg, it, engine, sampling, QualityCheck(rules), adapters),  # loop.synth
        }
        for stage, run_stage in stage_runs.items():
            if it.stage_done(stage):
                continue
            log.info("iteration %d: %s", it.k, stage)
            with observe.stage(it.k, stage, engine):  # progress, status.json and the trackers
                before, started = usage_snapshot(engine), time.time()
                await run_stage()
                record_engine_usage(it, stage, before, usage_snapshot(engine), time.time() - started)
    log.info("iteration %d: engine shut down", it.k)
    return timings


def usage_snapshot(engine) -> list[dict]:
    """What each replica has served so far (one entry for an engine without replicas)."""
    return engine.replica_usage() if hasattr(engine, "replica_usage") else [engine.usage()]


def record_engine_usage(it: artifacts.IterationPaths, stage: str, before: list[dict], after: list[dict],
                        seconds: float) -> None:
    """manifests/engine_usage.json: which adapter (and which weights) served each stage,
    with its requests, tokens, wall time and generated tokens per second."""
    path = it.stage_manifest("engine_usage")
    usage = artifacts.read_json(path) if path.exists() else {}
    per_replica = [usage_delta(b, a) for b, a in zip(before, after)]
    served = merge_usage(per_replica)
    generated = sum(info.get("completion_tokens", 0) for info in served.values())
    usage[stage] = {
        "adapters": served,
        "requests": sum(info.get("requests", 0) for info in served.values()),
        "prompt_tokens": sum(info.get("prompt_tokens", 0) for info in served.values()),
        "completion_tokens": generated, "seconds": round(seconds, 2),
        "tokens_per_second": round(generated / seconds, 1) if seconds > 0 else None,
        "replicas": len(after),
        "per_replica": [{"requests": sum(i["requests"] for i in part.values()),
                         "completion_tokens": sum(i.get("completion_tokens", 0) for i in part.values())}
                        for part in per_replica],
    }
    artifacts.write_json(path, usage)


def served_dtype(cfg: DictConfig) -> dict:
    """model.dtype as asked and as served here (auto: bf16 on a CPU that has it, see precision)."""
    on_gpu = int(ray.cluster_resources().get("GPU", 0)) > 0
    return {"requested": str(cfg.model.dtype), "served": precision.serving_dtype(str(cfg.model.dtype), on_gpu)}


def train_config(cfg: DictConfig) -> dict:
    """train.* as a dict, torch threads defaulting to its CPUs (workers.with_cpu_threads), with
    model.dtype beside it: train.bf16=auto trains in bf16 on a CPU that serves the model in it."""
    tcfg = workers.with_cpu_threads(OmegaConf.to_container(cfg.train, resolve=True))
    return {**tcfg, "model_dtype": str(cfg.model.dtype)}


def train_configs(tcfg: dict) -> dict[str, dict]:
    """Each role's training config: train_config() with train.per_role on top."""
    return {role: {**tcfg, **(tcfg["per_role"].get(role) or {})} for role in artifacts.ROLES}


def train_both(cfg: DictConfig, it: artifacts.IterationPaths, model_path: str, adapters: dict[str, str]) -> None:
    started = time.time()
    tcfg = train_config(cfg)
    role_cfgs = train_configs(tcfg)
    gpus, together = ray_train.placement(list(role_cfgs.values()))  # both at once when the cluster has room
    sft_rows = artifacts.read_json(it.stage_manifest("curate"))["counts"]
    roles = {}
    pending = {}
    for role in artifacts.ROLES:
        role_manifest = it.stage_manifest(f"train_{role}")
        if role_manifest.exists():
            roles[role] = artifacts.read_json(role_manifest)
            continue
        if not sft_rows[role]:
            roles[role] = carry_adapter_over(it, role, adapters.get(role))
            continue
        role_cfg = {**role_cfgs[role], "report": observe.train_report(it.k, role)}
        ref = ray_train.launch(model_path, str(it.sft(role)), str(it.adapter(role)), adapters.get(role), role_cfg,
                               int(cfg.seed), gpus=gpus)
        pending[role] = ref
        if not (tcfg["parallel"] and together):
            roles[role] = _finish_training(it, role, ref)
    for role, ref in pending.items():
        if role not in roles:
            roles[role] = _finish_training(it, role, ref)
    artifacts.write_stage_manifest(it, "train", started=started, config_digest=artifacts.config_hash(tcfg),
                                   counts={r: info["examples"] for r, info in roles.items()},
                                   outputs=[it.adapter(r) for r in artifacts.ROLES], extra={"roles": roles})


def carry_adapter_over(it: artifacts.IterationPaths, role: str, previous: str | None) -> dict:
    """No accepted data for this role: keep the previous adapter (nothing to learn from)."""
    if previous is None:
        raise UserError(f"iteration {it.k} produced no {role} training data: {metrics.why_empty(it)}; the generated data "
                        f"is kept in {it.root} -- change those settings in a new run (run.name=NEW_NAME)")
    log.warning("iteration %d: no %s training data (%s); carrying the adapter of iteration %d over", it.k, role,
                metrics.why_empty(it), it.k - 1)
    shutil.rmtree(it.adapter(role), ignore_errors=True)
    shutil.copytree(previous, it.adapter(role))
    info = {"examples": 0, "steps": 0, "train_loss": None, "init_adapter": previous,
            "skipped": f"no training data; adapter of iteration {it.k - 1} carried over", "seconds": 0.0}
    artifacts.write_json(it.stage_manifest(f"train_{role}"), info)
    return info


def _finish_training(it: artifacts.IterationPaths, role: str, ref) -> dict:
    try:
        info = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(getattr(err, "cause", None), train.NonFiniteLoss):  # its message names the settings
            raise UserError(f"training the {role} adapter of iteration {it.k} stopped: {err.cause} (train.* is part of "
                            "the method: change it in a new run, run.name=NEW_NAME)") from err
        raise UserError(f"training the {role} adapter of iteration {it.k} failed: "
                        f"{str(err).strip().splitlines()[-1][:300]} -- the generated data is kept; "
                        f"fix the train.* settings and rerun the same command to resume") from err
    artifacts.write_json(it.stage_manifest(f"train_{role}"), info)
    return info


def run(settings: schema.Config, cfg: DictConfig) -> artifacts.RunPaths:
    """The whole loop; returns the run's paths. Safe to call again: it resumes."""
    seeds = load_seeds(settings.seeds, settings.model.languages)
    if cfg.ray.address:  # an unreachable cluster fails now, within ray.connect_timeout_s
        workers.check_reachable(str(cfg.ray.address), float(cfg.ray.connect_timeout_s))
    paths = artifacts.RunPaths(Path(str(cfg.paths.iterations_dir)) / str(cfg.run.name))
    with RunLock(paths.root), observe.watching(cfg, paths.root):  # one writer; status.json and trackers
        return _run_locked(settings, cfg, seeds)


def _run_locked(settings: schema.Config, cfg: DictConfig, seeds: dict[str, list[str]]) -> artifacts.RunPaths:
    paths = start_run(settings, cfg)
    started = time.time()
    model_path = None
    history = []
    for k in range(1, cfg.iterations + 1):
        it = paths.iteration(k)
        if it.manifest.exists():
            log.info("iteration %d: complete, skipped", k)
            history.append(artifacts.read_json(it.metrics))
            continue
        if model_path is None:  # only when there is work: a finished run resumes instantly
            model_path = resolve_model(settings.model, settings.paths.cache_dir)
            workers.init_ray(settings.ray)
            ray_train.check_placement(cfg.engine, list(train_configs(train_config(cfg)).values()))  # or one line now
        t0 = time.time()
        history.append(run_iteration(settings, cfg, paths, k, model_path, seeds))
        observe.log_finished(paths)
        w = history[-1]["words"]
        log.info("iteration %d done in %.0f s: initial mean %s words, extended mean %s words", k,
                 time.time() - t0, w["initial"]["mean"], w["extended"]["mean"])
    if model_path is None:  # every iteration was already complete
        model_path = artifacts.read_json(paths.iteration(1).manifest)["model"]
    if cfg.eval.every_iteration:  # normally only the last iteration's generator is left
        in_run.catch_up(cfg, paths, model_path, cfg.iterations)
    observe.log_finished(paths)  # the last evaluation (and any iteration not yet logged)
    artifacts.write_json(paths.manifest, {
        "run": str(cfg.run.name), "model": str(cfg.model.path), "model_resolved": model_path,
        "model_build": artifacts.model_build(model_path),
        "iterations_completed": len(history), "seconds_this_invocation": round(time.time() - started, 1),
        "tokens": {key: sum((h.get("tokens") or {}).get(key) or 0 for h in history)
                   for key in ("requests", "prompt_tokens", "completion_tokens", "seconds")},
        "config": OmegaConf.to_container(cfg, resolve=True), "versions": artifacts.package_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return paths
