"""`python -m selflengthen finalize RUN`: the end of the method (algorithm.md 1.4, 4) as
steps a user can run one by one (`step=collect|constrain|export|train|eval`) or all at
once (`step=all`). Each step writes its manifest last and is skipped when it exists, so a
killed finalize resumes at the first unfinished step. Everything goes under
`iterations/<RUN>/<finalize.output_dir>/` (default `final/`):

    collected.jsonl            collect: every accepted pair of every iteration (+ extra pairs)
    extra/                     the extra pairs' augment and generate stages (extra_per_language)
    constrained.jsonl          constrain: queries with their length constraint woven in
    dataset/                   export: train.jsonl, alpaca.json, dataset_info.json, hf_dataset/, card
    model/adapter | model/full train: the final model (LoRA adapter, or full weights)
    model/merged               train with finalize.merge=true: the adapter merged into the base
    eval/<benchmark>/          eval: the final model on the run's eval benchmarks
    manifests/<step>.json      one per finished step
    manifest.json              written last: the counts of every step

The run's own settings (model, loop, seed, training recipe, eval benchmarks, and its
finalize settings) are used; the command line's `finalize.*` and `eval.*` overrides win
over them, and `engine`, `ray`, `judge` and `paths` come from the command line.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from omegaconf import DictConfig, OmegaConf, open_dict

from selflengthen import preflight
from selflengthen.config import schema
from selflengthen.config.schema import FinalizeConfig
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import workers
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.engines.merged import merge_adapter
from selflengthen.evaluation import in_run
from selflengthen.finalize.collect import collect
from selflengthen.finalize.constraints import ConstraintConfig
from selflengthen.finalize.rewrite import constrain_all
from selflengthen.models.resolve import resolve_model
from selflengthen.pipeline import stage
from selflengthen.pipeline.stages import augment, generate
from selflengthen.store import artifacts
from selflengthen.store.export import export
from selflengthen.store.runlock import RunLock
from selflengthen.store.runs import instruction_pool
from selflengthen.store.seeds import load_seeds
from selflengthen.training import ray_train

log = logging.getLogger("selflengthen")

STEPS = ("collect", "constrain", "export", "train", "eval")
FROM_RUN = ("model", "loop", "seed", "train", "seeds", "eval", "finalize")  # the run's settings
OVERRIDABLE = ("finalize.", "eval.")  # command-line overrides that win over the run's settings


@dataclass(frozen=True)
class FinalPaths:
    """Every path of a run's finalize output."""

    root: Path

    @property
    def collected(self) -> Path:
        return self.root / "collected.jsonl"

    @property
    def constrained(self) -> Path:
        return self.root / "constrained.jsonl"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def merged(self) -> Path:
        return self.root / "model" / "merged"

    def extra(self, k: int) -> artifacts.IterationPaths:
        return artifacts.IterationPaths(self.root / "extra", k)

    def step_manifest(self, step: str) -> Path:
        return self.root / "manifests" / f"{step}.json"

    def done(self, step: str) -> bool:
        return self.step_manifest(step).exists()

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


# --- settings -------------------------------------------------------------------------------

def run_root_of(cfg: DictConfig | FinalizeConfig) -> Path:
    return Path(str(cfg.paths.iterations_dir)).expanduser() / str(cfg.run.name)


def settle(cfg: DictConfig, overrides: list[str]) -> FinalizeConfig:
    """The finalize settings: the run's saved settings, then the command line's finalize.*
    and eval.* overrides on top (`overrides` are Hydra's task overrides), checked and typed
    at the verb's entry as every verb's are (preflight.settings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    root = run_root_of(cfg)
    if not (root / "config.yaml").exists():
        raise UserError(f"no run at {root} (it has no config.yaml); give a run made by `python -m selflengthen run`:"
                        f" finalize RUN_NAME (a folder under {cfg.paths.iterations_dir}/) or finalize PATH/TO/RUN")
    run = OmegaConf.load(root / "config.yaml")
    out = cfg.copy()
    with open_dict(out):
        for key in FROM_RUN:  # merged over today's defaults: keys added since the run keep them
            if key in run:
                out[key] = OmegaConf.merge(out[key], run[key]) if OmegaConf.is_dict(run[key]) else run[key]
        for o in OverridesParser.create().parse_overrides(overrides):
            key = o.key_or_group
            if key.startswith(OVERRIDABLE) and not o.is_delete():
                OmegaConf.update(out, key, o.value(), merge=True, force_add=True)
    return preflight.settings(out, "finalize")  # every value's type, range and rule (schema.py)


def steps_wanted(settings: FinalizeConfig) -> list[str]:
    """`step=X` runs the steps up to X (earlier ones only when unfinished); `step=all` runs
    collect, constrain and export, then train and eval when finalize.train is true."""
    if settings.step != "all":
        return list(STEPS[: STEPS.index(settings.step) + 1])
    return list(STEPS) if settings.finalize.train else list(STEPS[:3])


def writable_root(run_root: Path, finalize: schema.Finalize) -> FinalPaths:
    fp = FinalPaths(run_root / finalize.output_dir)
    probe = fp.root / ".write-test"
    try:
        fp.root.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write the finalize output folder {fp.root}: {err.strerror}; set "
                        f"finalize.output_dir to a writable folder (absolute, or relative to the run)") from None
    return fp


# --- the steps ------------------------------------------------------------------------------

def write_step(fp: FinalPaths, step: str, started: float, counts: dict, **extra) -> dict:
    manifest = {"step": step, "counts": counts, "seconds": round(time.time() - started, 2),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    artifacts.write_json(fp.step_manifest(step), manifest)
    return manifest


async def extra_pairs(settings: FinalizeConfig, run: artifacts.RunPaths, fp: FinalPaths, engine, k: int,
                      seen: set[str]) -> tuple[list[dict], dict]:
    """finalize.extra_per_language more pairs from the final generator: new instructions by
    the augment stage (over the run's whole pool), then the generate stage with its quality
    check, as iteration k = last + 1 would make them (the extender is not used)."""
    it = fp.extra(k)
    loop = settings.loop
    wanted = settings.model_copy(update={"loop": loop.model_copy(update={"augment": loop.augment.model_copy(
        update={"new_per_language": settings.finalize.extra_per_language})})})
    pool = {} if it.stage_done("augment") else instruction_pool(load_seeds(settings.seeds, settings.model.languages),
                                                                  run, k)  # read only for augment
    inputs = stage.Inputs(it, settings.seed, tuple(settings.model.languages), "", {"generator": "final"},
                          engine=engine, sampling=sampling_from(loop.sampling), rules=loop.quality_rules(), pool=pool)
    for each in (augment.STAGE, generate.STAGE):  # as iteration k of the loop would, with the final generator
        await stage.run_stage(each, wanted, inputs)
    rows, dropped = [], 0
    for row in sorted(artifacts.read_jsonl(it.initial), key=lambda r: str(r["id"])):
        if row["response"] in seen:
            dropped += 1
            continue
        seen.add(row["response"])
        rows.append({"id": f"it{k}-{row['id']}", "iteration": k, "source_id": row["id"],
                     "instruction_id": row["instruction_id"], "language": row["language"],
                     "instruction": row["instruction"], "response": row["response"], "words": row["words"],
                     "source": "final_generator"})
    return rows, {"extra_generated": len(rows) + dropped, "extra_kept": len(rows), "extra_duplicates": dropped}


def in_bounds_or_fail(rows: list[dict], constraints: schema.Constraints) -> None:
    ccfg = ConstraintConfig.of(constraints)
    if any(ccfg.in_bounds(int(r["words"])) for r in rows):
        return
    words = [int(r["words"]) for r in rows]
    seen = f" (they have {min(words)} to {max(words)} words)" if words else ""
    raise UserError(f"none of the {len(rows)} collected responses{seen} lies in the constraint bounds "
                    f"[{ccfg.min_words}, {ccfg.max_words}) words, so no query gets a length constraint; set "
                    f"finalize.constraints.min_words and finalize.constraints.max_words (and the units) to "
                    f"match your responses' lengths")


async def data_steps(settings: FinalizeConfig, run: artifacts.RunPaths, fp: FinalPaths, model_path: str,
                     todo: list[str]) -> None:
    """collect and constrain: the steps that may need the engine, on one engine start."""
    fcfg = settings.finalize
    last = run.iterations()[-1]
    want_extra = fcfg.extra_per_language > 0 and "collect" in todo and not fp.done("collect")
    want_model_rewrite = "constrain" in todo and not fp.done("constrain") and fcfg.rewrite.use_model
    adapters = {}
    if want_extra or fcfg.rewrite.adapter == "generator":
        adapters["generator"] = str(last.adapter("generator"))
    if fcfg.rewrite.adapter == "extender":
        adapters["extender"] = str(last.adapter("extender"))
    async with contextlib.AsyncExitStack() as stack:
        engine = None

        async def engine_now():
            nonlocal engine
            if engine is None:
                log.info("finalize: starting the %s engine on %s (adapters: %s)", settings.engine.kind, model_path,
                         sorted(adapters) or "none")
                engine = await stack.enter_async_context(serving(model_path, adapters, settings.model, settings.engine,
                                                                 settings.ray))
            return engine

        if "collect" in todo and not fp.done("collect"):
            started = time.time()
            rows, stats = collect(run.root, allow_unfinished=fcfg.allow_unfinished)
            if want_extra:
                log.info("finalize: %d extra instructions per language for the final generator",
                         fcfg.extra_per_language)
                more, extra_stats = await extra_pairs(settings, run, fp, await engine_now(), last.k + 1,
                                                      {r["response"] for r in rows})
                rows += more
                stats.update(extra_stats)
            stats["rows"] = len(rows)
            artifacts.write_jsonl(fp.collected, rows)
            write_step(fp, "collect", started, stats)
            log.info("finalize: collected %d pairs from iterations %s (%d exact duplicates removed)", len(rows),
                     stats["iterations"], stats["duplicates_removed"])
        if "constrain" in todo and not fp.done("constrain"):
            started = time.time()
            rows = artifacts.read_jsonl(fp.collected)
            in_bounds_or_fail(rows, fcfg.constraints)
            engine = await engine_now() if want_model_rewrite else None
            adapter = fcfg.rewrite.adapter if engine is not None else None
            rows, stats = await constrain_all(engine, rows, fcfg, settings.seed, adapter=adapter)
            artifacts.write_jsonl(fp.constrained, rows)
            write_step(fp, "constrain", started, stats, rewriter={"model": model_path if engine else None,
                                                                  "adapter": adapter})
            log.info("finalize: %d of %d queries constrained (%d rewritten by the model, %d by the template)",
                     stats["constrained"], stats["rows"], stats["rewritten_by_model"], stats["template_fallback"])


def export_step(settings: FinalizeConfig, run: artifacts.RunPaths, fp: FinalPaths, model_path: str) -> dict:
    manifest_path = fp.dataset / "manifest.json"
    if manifest_path.exists():
        return artifacts.read_json(manifest_path)
    rows = artifacts.read_jsonl(fp.constrained)
    digest = artifacts.config_hash(settings.finalize.model_dump(exclude_unset=True))  # the keys the YAML holds
    details = {"run": run.root.name, "seed": settings.seed,
               "collect": artifacts.read_json(fp.step_manifest("collect"))["counts"],
               "constrain": artifacts.read_json(fp.step_manifest("constrain"))["counts"]}
    manifest = export(rows, fp.dataset, card_info={"model": settings.model.path, "config_digest": digest,
                                                    "name": settings.finalize.dataset_name, **details})
    log.info("finalize: exported %d rows to %s", manifest["counts"]["rows"], fp.dataset)
    return manifest


def training_config(settings: FinalizeConfig) -> dict:
    """The run's LoRA recipe (train.*, without per-role values), with finalize.training's
    non-null values on top, as the trainer takes it (a plain dict, shipped to a Ray task)."""
    tcfg = settings.train.model_dump(exclude_unset=True, exclude={"per_role"})
    tcfg.update({k: v for k, v in settings.finalize.training.model_dump().items() if v is not None})
    return workers.with_cpu_threads(tcfg)


def _ray_get(ref, what: str):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise UserError(f"{what} failed: {str(err).strip().splitlines()[-1][:300]} -- the exported dataset is kept; "
                        f"fix the finalize.training settings and rerun the same command to resume") from err


def train_step(settings: FinalizeConfig, fp: FinalPaths, model_path: str) -> dict:
    """Fine-tune the base model on the exported set (a Ray task, on a GPU when the cluster
    has one); then merge a LoRA adapter into the base weights when finalize.merge is true."""
    tcfg = training_config(settings)
    full = tcfg["method"] == "full"
    out = fp.model / ("full" if full else "adapter")
    workers.init_ray(settings.ray)
    if not fp.done("train"):
        started = time.time()
        gpus, _ = ray_train.placement([tcfg])  # one line when the cluster cannot hold it
        log.info("finalize: training the final model (%s) on %s", tcfg["method"], fp.dataset / "train.jsonl")
        info = _ray_get(ray_train.launch(model_path, str(fp.dataset / "train.jsonl"), str(out), None, tcfg,
                                         settings.seed, gpus=gpus), "training the final model")
        write_step(fp, "train", started, {"examples": info["examples"], "steps": info["steps"]}, training=info,
                   output=str(out), config=tcfg)
    trained = artifacts.read_json(fp.step_manifest("train"))
    if settings.finalize.merge and not full and not fp.done("merge"):
        started = time.time()
        task = ray.remote(merge_adapter).options(num_cpus=1, num_gpus=0)
        info = _ray_get(task.remote(model_path, str(out), str(fp.merged)), "merging the final adapter")
        write_step(fp, "merge", started, {"parameters": info["parameters"]}, merge=info)
        log.info("finalize: merged the adapter into %s", fp.merged)
    return trained


def final_model(fp: FinalPaths, model_path: str) -> tuple[str, dict[str, str]]:
    """(model folder, adapters) that serve the final model: the merged or fully trained
    weights alone, else the base model with the final adapter as the generator."""
    if fp.done("merge"):
        return str(fp.merged), {}
    if (fp.model / "full" / "config.json").exists():
        return str(fp.model / "full"), {}
    return model_path, {"generator": str(fp.model / "adapter")}


def eval_step(settings: FinalizeConfig, run: artifacts.RunPaths, fp: FinalPaths, model_path: str) -> dict:
    """The final model on the run's eval benchmarks, scored as every iteration was."""
    if fp.done("eval"):
        return artifacts.read_json(fp.step_manifest("eval"))
    if not fp.done("train"):
        raise UserError("step=eval needs the final model: run `finalize RUN step=train` (or finalize.train=true) first")
    trouble = in_run.benchmark_problems(settings.eval)
    if trouble:
        raise UserError(f"cannot evaluate the final model: {trouble[0]}")
    started = time.time()
    served, adapters = final_model(fp, model_path)
    adapter = "generator" if adapters else None

    async def go():
        async with serving(served, adapters, settings.model, settings.engine, settings.ray) as engine:
            return await in_run.evaluate_benchmarks(
                in_run.EvalSetup.of(settings), engine, adapter, settings.eval.benchmarks, lambda name: fp.root / "eval" / name,
                meta={"final_model": served, "adapter": adapter}, label="finalize")

    results = {name: in_run.headline(summary) for name, summary in run_async(go()).items()}
    last = in_run.load(run).get(run.iterations()[-1].k, {})
    return write_step(fp, "eval", started, results, served=served, adapter=adapter,
                      last_iteration={name: last.get(name) for name in results})


# --- the command ----------------------------------------------------------------------------

def run_finalize(cfg: DictConfig, overrides: list[str]) -> tuple[dict, FinalPaths]:
    """The whole `finalize` command; returns its manifest and paths."""
    settings = settle(cfg, overrides)
    run = artifacts.RunPaths(run_root_of(settings))
    todo = steps_wanted(settings)
    rows, _ = collect(run.root, allow_unfinished=settings.finalize.allow_unfinished)  # checks before any write
    fp = FinalPaths(run.root / settings.finalize.output_dir)
    if "constrain" in todo and not fp.done("constrain") and not settings.finalize.extra_per_language:
        in_bounds_or_fail(artifacts.read_jsonl(fp.collected) if fp.done("collect") else rows,
                          settings.finalize.constraints)
    fp = writable_root(run.root, settings.finalize)
    with RunLock(run.root):
        model_path = resolve_model(settings.model, settings.paths.cache_dir)
        fp.manifest.unlink(missing_ok=True)  # incomplete until every wanted step is done again
        if "constrain" in todo or "collect" in todo:
            run_async(data_steps(settings, run, fp, model_path, todo))
        if "export" in todo:
            export_step(settings, run, fp, model_path)
        if "train" in todo:
            train_step(settings, fp, model_path)
        if "eval" in todo:
            eval_step(settings, run, fp, model_path)
        manifest = {"run": run.root.name, "steps": todo, "model": model_path,
                    "counts": {s: artifacts.read_json(fp.step_manifest(s))["counts"]
                               for s in (*STEPS, "merge") if fp.done(s)},
                    "dataset": str(fp.dataset) if (fp.dataset / "manifest.json").exists() else None,
                    "final_model": final_model(fp, model_path)[0] if fp.done("train") else None,
                    "eval_last_iteration": (artifacts.read_json(fp.step_manifest("eval"))["last_iteration"]
                                            if fp.done("eval") else None),
                    "config": settings.finalize.model_dump(mode="json"),
                    "versions": artifacts.package_versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        artifacts.write_json(fp.manifest, manifest)
    return manifest, fp


def report(manifest: dict, fp: FinalPaths) -> str:
    """The printed summary of a finalize."""
    c = manifest["counts"]
    lines = [f"finalize of run {manifest['run']} ({', '.join(manifest['steps'])}): {fp.root}"]
    if "collect" in c:
        k = c["collect"]
        extra = f", {k['extra_kept']} extra from the final generator" if "extra_kept" in k else ""
        lines.append(f"  collect    {k['rows']} pairs from iterations {k['iterations']} "
                     f"({k['duplicates_removed']} duplicates removed{extra})")
    if "constrain" in c:
        k = c["constrain"]
        reasons = ", ".join(f"{r} {n}" for r, n in k["fallback_reasons"].items()) or "none"
        lines.append(f"  constrain  {k['constrained']} in bounds of {k['rows']}: {k['rewritten_by_model']} rewritten "
                     f"by the model, {k['template_fallback']} by the template (reasons: {reasons}); "
                     f"types {k['types']}")
    if manifest.get("dataset"):
        lines.append(f"  export     {manifest['dataset']}")
    if "train" in c:
        lines.append(f"  train      {c['train']['examples']} examples, {c['train']['steps']} steps -> "
                     f"{manifest['final_model']}")
    if "eval" in c:
        last = manifest.get("eval_last_iteration") or {}
        for name, h in c["eval"].items():
            lines.append(f"  eval       {name}: {_headline(h)}; last iteration: {_headline(last.get(name))}")
    return "\n".join(lines)


def _headline(h: dict | None) -> str:
    if not h:
        return "not evaluated"
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    return (f"{h.get('items')} items, mean words {fmt(h.get('mean_words'))}, length score "
            f"{fmt(h.get('length_score'))}, quality {fmt(h.get('quality'))}")


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py), inside its Hydra job: the steps (with the command
    line's overrides, which settle() lays over the run's own config), then the report."""
    from hydra.core.hydra_config import HydraConfig

    manifest, fp = run_finalize(cfg, list(HydraConfig.get().overrides.task))
    print(report(manifest, fp))
