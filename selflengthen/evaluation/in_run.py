"""Per-iteration evaluation inside a run (`eval.every_iteration=true`): the base model once,
as iteration 0, and each iteration's generator after its training, on the benchmarks in
`eval.benchmarks`. Iteration k's generator is evaluated on iteration k+1's engine, which
already serves it (no extra engine start); the last iteration's gets an engine of its own
after training. Results: `iter_<k>/eval/<benchmark>/`, a headline in `iter_<k>/metrics.json`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from selflengthen.config import schema
from selflengthen.config.features import FeatureCheck
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import Engine
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.evaluation import runner
from selflengthen.evaluation.benchmarks import BENCHMARKS, answers_per_item, get_benchmark, load_items
from selflengthen.evaluation.judging import judge_engine, judge_settings
from selflengthen.store import artifacts
from selflengthen.store.runs import previous_adapters

log = logging.getLogger("selflengthen")


def eval_dir(paths: artifacts.RunPaths, k: int, benchmark: str) -> Path:
    return paths.root / f"iter_{k}" / "eval" / benchmark


@dataclass(frozen=True)
class EvalSetup:
    """What evaluating a generator reads of the settings: eval.* (benchmarks, data, limit,
    languages, token cap), the loop's sampling where a benchmark has none, the model and
    where its engines run (the last iteration's engine, a vLLM judge's), the judge, the seed."""
    eval: schema.Eval
    sampling: schema.Sampling
    model: schema.Model
    engine: schema.Engine
    ray: schema.Ray
    judge: schema.Judge
    seed: int

    @classmethod
    def of(cls, settings: schema.Config) -> "EvalSetup":
        return cls(settings.eval, settings.loop.sampling, settings.model, settings.engine, settings.ray,
                   settings.judge, settings.seed)


def missing(benchmarks: list[str], paths: artifacts.RunPaths, k: int) -> list[str]:
    return [b for b in benchmarks if not runner.EvalPaths(eval_dir(paths, k, b)).summary.exists()]


def headline(summary: dict) -> dict:
    """What the length curves show of one benchmark's summary."""
    score = summary.get("length_score") or {}
    quality = summary.get("quality") or {}
    return {"items": summary.get("items"), "mean_words": summary.get("mean_words"),
            "median_words": summary.get("median_words"),  # beside the mean: answers cut at the cap move it less
            "not_writing": summary.get("not_writing"),
            "length_score": score.get("overall"), "quality": quality.get("overall"), "total": summary.get("total"),
            "signals": summary.get("signals"),  # judge-free quality beside the lengths (core/signals)
            "quality_by_segment": quality.get("by_segment")}  # with a judge: its score of each part of the answers


def benchmark_problems(ev: schema.Eval) -> list[str]:
    """Problems with eval.benchmarks and eval.data: unknown names, missing data files."""
    out = []
    unknown = [b for b in ev.benchmarks if b not in BENCHMARKS]
    if unknown:
        out.append(f"eval.benchmarks has unknown {unknown}; choose from {list(BENCHMARKS)}")
    need_data = [b for b in ev.benchmarks if b in BENCHMARKS and not BENCHMARKS[b].packaged]
    if need_data and not ev.data:
        out.append(f"eval.benchmarks {need_data} need their data files: set eval.data=FOLDER (holding "
                   f"{', '.join(BENCHMARKS[b].default_file for b in need_data)}), or use eval.benchmarks=[heldout_tiny]")
    elif need_data and not Path(ev.data).expanduser().exists():
        out.append(f"eval.data={ev.data} does not exist; point it at the folder holding the benchmark files")
    if not ev.benchmarks:
        out.append("eval.benchmarks is empty; name at least one, e.g. 'eval.benchmarks=[heldout_tiny]'")
    return out


def check_config(ev: schema.Eval, judge: schema.Judge) -> list[str]:
    """Problems with `eval.*` inside a run (reported with the rest of the config, before any
    work): the benchmarks when eval.every_iteration, and no vLLM judge beside the loop's engine."""
    if not ev.every_iteration:
        return []
    out = benchmark_problems(ev)
    if isinstance(judge, schema.VllmJudge):
        out.append("judge=vllm cannot run inside a run (it would need a second engine beside the loop's); use "
                   "judge=openai with a server, or judge=none in the run and `python -m selflengthen eval` later")
    return out


CONFIG_CHECK = FeatureCheck(("eval", "judge"), check_config)  # the loop validates with it: check_config(eval, judge)


async def evaluate_generator(setup: EvalSetup, paths: artifacts.RunPaths, k: int, engine: Engine,
                             adapter: str | None) -> None:
    """Evaluate iteration k's generator (k = 0: the base model) on the engine that serves it."""
    todo = missing(setup.eval.benchmarks, paths, k)
    if not todo:
        return
    summaries = await evaluate_benchmarks(setup, engine, adapter, todo, lambda name: eval_dir(paths, k, name),
                                          meta={"iteration": k, "adapter": adapter, "samples": setup.eval.samples},
                                          label=f"iteration {k}")
    for name, summary in summaries.items():
        record(paths, k, name, summary)


async def evaluate_benchmarks(setup: EvalSetup, engine: Engine, adapter: str | None, names: list[str], out_dir,
                              *, meta: dict, label: str) -> dict[str, dict]:
    """The model `engine` serves (with `adapter`) on each benchmark of `names` (eval.*'s
    data, limit, languages and token cap; the loop's sampling where the benchmark has none),
    judged by the judge; results in out_dir(name); returns the summaries."""
    summaries = {}
    ev = setup.eval
    async with judge_engine(setup.judge, setup.model, setup.engine, setup.ray) as judge:
        jsampling, jretries, jmeta = judge_settings(setup.judge) if judge is not None else (None, 0, {})
        for name in names:
            bench = get_benchmark(name)
            items = answers_per_item(load_items(name, ev.data, limit=ev.limit, languages=ev.languages or None),
                                     ev.samples)
            sampling, sampling_meta = runner.bench_sampling(bench, sampling_from(setup.sampling), ev.max_tokens,
                                                            setup.model.max_model_len)
            log.info("%s: eval %s (%d items, %s)", label, name, len(items), adapter or "base model")
            summaries[name] = await runner.evaluate(
                engine, bench, items, Path(out_dir(name)), sampling=sampling, sampling_meta=sampling_meta,
                adapter=adapter, meta=meta, seed=setup.seed, judge_engine=judge, judge_sampling=jsampling,
                judge_retries=jretries, judge_meta=jmeta)
    return summaries


def record(paths: artifacts.RunPaths, k: int, name: str, summary: dict) -> None:
    metrics = paths.iteration(k).metrics
    if k >= 1 and metrics.exists():
        m = artifacts.read_json(metrics)
        m.setdefault("eval", {})[name] = headline(summary)
        artifacts.write_json(metrics, m)


def load(paths: artifacts.RunPaths) -> dict[int, dict[str, dict]]:
    """Every finished evaluation of a run: {iteration: {benchmark: headline}}."""
    out: dict[int, dict[str, dict]] = {}
    for summary in sorted(paths.root.glob("iter_*/eval/*/summary.json")):
        k = summary.parent.parent.parent.name[5:]
        if k.isdigit():
            out.setdefault(int(k), {})[summary.parent.name] = headline(artifacts.read_json(summary))
    return out


def catch_up(setup: EvalSetup, paths: artifacts.RunPaths, model_path: str, iterations: int) -> None:
    """After the loop: evaluate every iteration whose evaluation is missing (normally only
    the last), each on an engine serving that iteration's generator."""
    for k in range(0, iterations + 1):
        if not missing(setup.eval.benchmarks, paths, k):
            continue
        if k >= 1 and not paths.iteration(k).manifest.exists():
            raise UserError(f"iteration {k} is not complete; run the loop first")
        adapters = previous_adapters(paths, k + 1)

        async def go():
            async with serving(model_path, adapters, setup.model, setup.engine, setup.ray) as engine:
                await evaluate_generator(setup, paths, k, engine, "generator" if adapters else None)

        run_async(go())
