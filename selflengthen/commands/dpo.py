"""`python -m selflengthen dpo`: preference tuning of a model, or of a run's generator, on
long-writing instructions with required lengths (LongBench-Write rows).

Three steps, each finished by a manifest written last (its presence = the step is done),
so a rerun skips what is complete and a killed run resumes:
1. samples: k outputs per instruction on one engine start, all in flight (each finished
   sample is checkpointed in partial/), scored by the evaluation's length scorer and, with
   a judge, its quality rubric: S = (S_l + S_q)/2, or S_l alone with judge=none;
   -> samples.jsonl, samples.manifest.json
2. pairs: (chosen, rejected) per instruction (training/dpo_pairs.py) -> pairs.jsonl, pairs.manifest.json
   (the margins seen and kept)
3. train: TRL's DPOTrainer on LoRA through the training launcher (training/ray_train.py: a
   Ray task, or train.workers Ray Train workers; a GPU each where the cluster has them, and
   checkpoints a killed training resumes from), continuing from `adapter=` or a fresh LoRA
   -> adapter/, train.manifest.json
Each step is under the product's step contract (store/steps.py): its manifest records the
settings it was made with (and the digest of the step before it); a rerun with other
settings is refused in one line naming the changed keys, unless `redo=<step>` asks to redo
that step and the ones after it (a new `name=` keeps both).
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import ray
from omegaconf import DictConfig

from selflengthen import config, preflight
from selflengthen.config import schema
from selflengthen.config.schema import DpoConfig
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import Request, Sampling, workers
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.evaluation import runner, scoring
from selflengthen.evaluation.benchmarks import BENCHMARKS, Benchmark, get_benchmark, load_items
from selflengthen.evaluation.judging import judge_engine, judge_settings
from selflengthen.models.resolve import Served, served
from selflengthen.store import artifacts, steps
from selflengthen.store.samples import SampleLog, stable_seed
from selflengthen.training import dpo_pairs as pairing
from selflengthen.training import harness, ray_train

log = logging.getLogger("selflengthen")
STEPS = ("samples", "pairs", "train")


class DpoPaths:
    """Every file of one `dpo` job, under <out_dir>/<name>/."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs.jsonl"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    def manifest(self, step: str) -> Path:
        return self.root / f"{step}.manifest.json"

    def partial(self, what: str) -> Path:
        return self.root / "partial" / f"{what}.jsonl"


def output_name(settings: DpoConfig) -> str:
    who = settings.adapter.strip("/").replace("/", "-") if settings.adapter else settings.model.name
    return settings.name or re.sub(r"[^\w.-]+", "-", f"{who}-{settings.benchmark}")


def benchmark_problems(benchmark: str) -> list[str]:
    """dpo's one rule that needs the benchmark table (the other keys' rules are their types)."""
    bench = BENCHMARKS.get(benchmark)
    if bench is None or not bench.asks_a_length:
        usable = [b.name for b in BENCHMARKS.values() if b.asks_a_length]
        return [f"benchmark={benchmark} is not a LongBench-Write row format; choose one of {usable}"]
    return []


CONFIG_CHECK = config.FeatureCheck(("benchmark",), benchmark_problems)


def step_of(paths: DpoPaths, name: str, made_with: dict, older_digest: str, record: Path | None = None) -> steps.Step:
    """Step `name` of the job under the step contract; a manifest from before made_with was
    recorded matches when its config_hash is `older_digest` (the digest of that time)."""
    return steps.Step("dpo", name, paths.root, record or paths.manifest(name), made_with, "name=NEW",
                      legacy={"config_hash": older_digest})


def _write_manifest(step: steps.Step, started: float, info: dict) -> dict:
    made = step.fields()
    info = {"step": step.name, "seconds": round(time.time() - started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config_hash": made["settings_hash"], **info,
            "versions": artifacts.package_versions(), **made}
    artifacts.write_json(step.record, info)
    return info


# --- step 1: samples -----------------------------------------------------------------

def sample_id(item: dict, index: int) -> str:
    return f"{item['id']}#{index}"


def score_of(row: dict, judged: bool) -> float | None:
    """S = (S_l + S_q)/2 when judged (None when the judge gave no usable answer), else S_l."""
    if not judged:
        return row["length_score"]
    return None if row.get("quality") is None else (row["length_score"] + row["quality"]) / 2


async def _sample(engine, bench: Benchmark, items: list[dict], k: int, sampling: Sampling, adapter: str | None,
                  seed: int, done: SampleLog) -> None:
    async def one(item: dict, index: int) -> None:
        sid = sample_id(item, index)
        out = await engine.complete(Request([{"role": "user", "content": item["prompt"]}], adapter=adapter,
                                            seed=stable_seed(seed, "dpo", item["id"], index), key=sid), sampling)
        row = scoring.prediction_row(bench, item, out.text)
        done.add({**row, "id": sid, "item": item["id"], "index": index, "finish_reason": out.finish_reason,
                  "completion_tokens": out.completion_tokens})

    await asyncio.gather(*(one(item, j) for item in items for j in range(k) if sample_id(item, j) not in done))


def sampling_for(settings: DpoConfig, serve: Served, bench: Benchmark) -> tuple[Sampling, dict]:
    sampling, meta = runner.bench_sampling(bench, sampling_from(serve.sampling), settings.max_tokens,
                                           serve.model.max_model_len)
    sampling = sampling.with_temperature(settings.dpo.temperature)
    return sampling, {**meta, "temperature": sampling.temperature}


def make_samples(settings: DpoConfig, paths: DpoPaths, bench: Benchmark, items: list[dict],
                 serve: Served, redo: set[str] = frozenset()) -> tuple[list[dict], dict]:
    k, model_path, adapters = settings.dpo.samples_per_instruction, serve.path, serve.adapters
    sampling, sampling_meta = sampling_for(settings, serve, bench)
    judged = settings.judge.kind != "none" and bench.rubric is not None
    made_with = {"model": model_path, "adapter": adapters.get("generator"), "benchmark": bench.name,
                 "items": [i["id"] for i in items], "prompts_digest": artifacts.config_hash([i["prompt"] for i in items]),
                 "samples_per_instruction": k, "sampling": asdict(sampling), "seed": settings.seed,
                 "judge": settings.judge.model_dump(exclude_unset=True) if judged else None}  # as the YAML held it
    older = artifacts.config_hash(made_with)  # what a manifest from before made_with was recorded holds
    step = step_of(paths, "samples", made_with, older)
    if (info := steps.reused(step, redo)) is not None:
        return artifacts.read_jsonl(paths.samples), info
    started = time.time()
    marker = paths.root / "partial" / "settings.json"  # the unfinished samples' settings, under the same contract
    begun = step_of(paths, "samples", made_with, older, record=marker)
    if marker.exists() and not steps.reusable(begun, redo="samples" in redo):
        for what in ("samples", "judgements"):  # other settings made them: not resumed
            paths.partial(what).unlink(missing_ok=True)
    begun.mark()
    done = SampleLog(paths.partial("samples"))
    if any(sample_id(item, j) not in done for item in items for j in range(k)):
        log.info("dpo: %d samples (%d instructions x %d) on %s%s", len(items) * k, len(items), k, model_path,
                 f" + adapter {adapters['generator']}" if adapters else "")

        async def sampled():
            async with serving(serve.ready(), adapters, serve.model, serve.engine, settings.ray) as engine:
                await _sample(engine, bench, items, k, sampling, "generator" if adapters else None,
                              settings.seed, done)

        run_async(sampled())
    rows = [done.done[sample_id(item, j)] for item in items for j in range(k)]
    info: dict = {"score": "S=(S_l+S_q)/2" if judged else "S_l (judge=none)"}
    if judged:
        j_sampling, retries, jmeta = judge_settings(settings.judge)
        jmeta = {**jmeta, "segments": 0}  # the pairs' score needs the whole answer's quality only

        async def judged_rows():
            async with judge_engine(settings.judge, serve.model, serve.engine, settings.ray) as engine:
                return await runner.run_judge(engine, bench, rows, runner.EvalPaths(paths.root), j_sampling,
                                              retries, jmeta)

        rows, info["judge"] = run_async(judged_rows())
    elif settings.judge.kind != "none":
        info["score"] = f"S_l ({bench.name} has no judge rubric)"
    for row in rows:
        row["score"] = score_of(row, judged)
    artifacts.write_jsonl(paths.samples, rows)
    scored = [r["score"] for r in rows if r["score"] is not None]
    info.update(model=model_path, adapter=adapters.get("generator"), benchmark=bench.name,
                instructions=len(items), samples_per_instruction=k, samples=len(rows), scored=len(scored),
                mean_score=sum(scored) / len(scored) if scored else None,
                mean_length_score=sum(r["length_score"] for r in rows) / len(rows),
                mean_words=sum(r["words"] for r in rows) / len(rows), sampling=sampling_meta,
                generated_tokens=sum(r.get("completion_tokens") or 0 for r in rows),
                signals=scoring.response_signals(rows))  # judge-free quality of the samples
    info = _write_manifest(step, started, info)
    for what in ("samples", "judgements"):
        paths.partial(what).unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    if not any(marker.parent.iterdir()):
        marker.parent.rmdir()
    return rows, info


# --- step 2: pairs -------------------------------------------------------------------

def make_pairs(dpo: schema.Dpo, paths: DpoPaths, samples: list[dict], samples_info: dict,
               redo: set[str] = frozenset()) -> tuple[list[dict], dict]:
    how, margin, penalties = dpo.pairing, dpo.min_margin, list(dpo.penalties)
    made_with = {"samples": samples_info["config_hash"], "pairing": how, "min_margin": margin}
    if penalties:  # absent when none: a pairs step made before penalties existed matches penalties=[]
        made_with["penalties"] = penalties
    step = step_of(paths, "pairs", made_with, artifacts.config_hash(made_with))
    if (info := steps.reused(step, redo)) is not None:
        return artifacts.read_jsonl(paths.pairs), info
    started = time.time()
    samples = pairing.penalised(samples, penalties)
    pairs = pairing.build_pairs(samples, margin, how)
    summary = {**pairing.margin_summary(samples, pairs, margin, how), "penalties": penalties,
               "penalised_samples": sum(1 for s in samples if s.get("penalty", 1.0) < 1.0)}
    if not pairs:
        raise UserError(f"{pairing.no_pairs_message(summary)}; the scored samples are kept in {paths.samples}")
    artifacts.write_jsonl(paths.pairs, pairs)
    return pairs, _write_manifest(step, started, {"score": samples_info["score"], **summary})


# --- step 3: train -------------------------------------------------------------------

def train_settings(settings: DpoConfig) -> dict:
    """train.* (the LoRA shape and the task's placement) with dpo.train.* on top, as the
    trainer takes them (a plain dict, shipped to a Ray task); the keys the YAML holds, so a
    finished step's digest still matches."""
    tcfg = settings.train.model_dump(exclude_unset=True, exclude={"per_role"})
    tcfg.update(settings.dpo.train.model_dump(exclude_unset=True))
    return workers.with_cpu_threads(tcfg)


def train(settings: DpoConfig, paths: DpoPaths, model_path: str, adapters: dict[str, str], pairs_info: dict,
          redo: set[str] = frozenset(), ready: Callable[[], str] | None = None) -> dict:
    """The training step on `model_path` (the model's name, as recorded); `ready()` gives the
    folder to train on, building an embedded model only now that the step runs."""
    tcfg = train_settings(settings)
    init = adapters.get("generator")
    made_with = {"pairs": pairs_info["config_hash"], "model": model_path, "init": init,
                 "train": {k: v for k, v in tcfg.items() if k != "cpu_threads"}, "seed": settings.seed}
    older = artifacts.config_hash({**made_with, "train": tcfg})  # with this machine's threads, as it was
    step = step_of(paths, "train", made_with, older)
    made_before = step.record.exists()
    if (info := steps.reused(step, redo)) is not None and (paths.adapter / "adapter_config.json").exists():
        return info
    if made_before and not step.record.exists():  # redo=: the earlier adapter and its checkpoints are not resumed
        for folder in (paths.adapter, harness.work_dir_of(str(paths.adapter))):
            shutil.rmtree(folder, ignore_errors=True)
    started = time.time()
    folder = ready() if ready else model_path  # an embedded model is built only now that training runs
    workers.init_ray(settings.ray)
    gpus, _ = ray_train.placement([tcfg])  # one line when the cluster cannot hold it
    log.info("dpo: training on %d pairs (%s)", pairs_info["pairs"], f"from {init}" if init else "a fresh LoRA")
    try:
        info = ray.get(ray_train.launch(folder, str(paths.pairs), str(paths.adapter), init, tcfg, settings.seed,
                                        gpus=gpus, trainer="dpo"))
    except ray.exceptions.RayTaskError as err:
        raise UserError(f"DPO training failed: {str(err).strip().splitlines()[-1][:300]} -- the samples and pairs "
                        f"are kept; fix the dpo.train.* / train.* settings and rerun the same command") from err
    return _write_manifest(step, started, {"model": model_path, "adapter": str(paths.adapter), **info})


def run_dpo(cfg: DictConfig) -> tuple[dict, DpoPaths]:
    """The whole `dpo` command: {step: manifest} and the job's paths."""
    settings = preflight.settings(cfg, "dpo", CONFIG_CHECK)  # every type and range, the model folder, the benchmark
    bench = get_benchmark(settings.benchmark)
    paths = DpoPaths(Path(settings.out_dir) / output_name(settings))
    items = load_items(bench.name, settings.data, limit=settings.limit, languages=settings.languages)
    serve = served(settings.adapter, settings.model, settings.loop.sampling, settings.engine, settings.paths)
    redo = steps.redo_set("dpo", STEPS, settings.redo)
    samples, samples_info = make_samples(settings, paths, bench, items, serve, redo)
    pairs, pairs_info = make_pairs(settings.dpo, paths, samples, samples_info, redo)
    train_info = train(settings, paths, serve.path, serve.adapters, pairs_info, redo, ready=serve.ready)
    return {"samples": samples_info, "pairs": pairs_info, "train": train_info}, paths


def report(result: dict, paths: DpoPaths) -> str:
    """The printed summary."""
    def num(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    s, p, t = result["samples"], result["pairs"], result["train"]
    m, sp = p.get("margin") or {}, p.get("spread") or {}
    return "\n".join([
        f"dpo {paths.root.name}: {s['instructions']} instructions x {s['samples_per_instruction']} samples, "
        f"scored by {s['score']}; mean score {num(s['mean_score'])}, mean {num(s['mean_words'])} words",
        f"  penalties: {', '.join(p.get('penalties') or []) or 'none'} "
        f"({p.get('penalised_samples', 0)} samples cut at the cap or repeating)",
        f"  spread per instruction (best - worst): min {num(sp.get('min'))}, median {num(sp.get('median'))}, "
        f"max {num(sp.get('max'))}",
        f"  pairs ({p['pairing']}, margin >= {p['min_margin']}): {p['pairs']} from {p['instructions_with_pairs']} "
        f"instructions; margin min {num(m.get('min'))}, mean {num(m.get('mean'))}, max {num(m.get('max'))}",
        f"  DPO: {t['steps']} steps from {t['reference']}; loss {num(t['loss_first'])} -> {num(t['loss_last'])}, "
        f"reward margin {num(t['reward_margin_first'])} -> {num(t['reward_margin_last'])}",
        f"adapter: {paths.adapter}",
    ])


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py): the three steps, then their summary."""
    result, paths = run_dpo(cfg)
    print(report(result, paths))
