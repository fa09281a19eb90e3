"""`python -m selflengthen eval`: one benchmark, or several (`benchmark=[longen,ruler]`), on
a base model, on an iteration of a run (its generator adapter on its base model), or on a
file of predictions made elsewhere.

Generation runs on the configured engine, started once for all the benchmarks (each
benchmark's items all in flight together, one benchmark after the other, so each one's
token accounting is its own); the judge, when configured, runs afterwards on its own engine
(the generation engine is shut down first, so both fit on the same accelerators). Results
go to `<out_dir>/<name>/` per benchmark: predictions.jsonl, summary.json (last), plot.png.

Each benchmark's two steps, `predict` (the answers: model, adapter, the data file's digest,
sampling, seed, samples; or the predictions file's digest) and `judge` (the judge's model,
sampling, retries and segments, over those answers), are under the product's step contract
(store/steps.py): `steps/<step>.json` records what each was made with before its work
starts; a rerun with other settings is refused in one line naming the changed keys, or with
`redo=predict|judge` redone. A folder from before these records resumes as it did.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from selflengthen import preflight
from selflengthen.config.schema import EvalConfig
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import Sampling
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.evaluation import runner, scoring
from selflengthen.evaluation.benchmarks import Benchmark, answers_per_item, benchmark_file, get_benchmark, load_items
from selflengthen.evaluation.judging import judge_engine, judge_settings
from selflengthen.models.resolve import served
from selflengthen.store import steps
from selflengthen.store.samples import SampleLog

log = logging.getLogger("selflengthen")
STEPS = ("predict", "judge")


def step_of(out: Path, name: str, made_with: dict) -> steps.Step:
    return steps.Step("eval", name, out, out / "steps" / f"{name}.json", made_with, "name=NEW")


def begin(out: Path, name: str, made_with: dict, redo: set[str]) -> str:
    """Step `name` of the benchmark in `out` under the step contract: made with these
    settings (or never recorded: a folder from before the records), resumed; other settings:
    refused, or with redo= discarded (the answers, or only the judgements) and redone. Its
    record is written now; the settings hash it records is returned (the judge's include it)."""
    step = step_of(out, name, made_with)
    made_before = step.record.exists()
    if not steps.reusable(step, redo=name in redo) and made_before:
        paths = runner.EvalPaths(out)
        if name == "predict":
            runner.discard(paths)
            step_of(out, "judge", {}).record.unlink(missing_ok=True)  # over the answers discarded
        else:
            runner.forget_judgements(paths)
    step.mark()
    return step.fields()["settings_hash"]


def output_name(settings: EvalConfig, benchmark: str, several: bool = False) -> str:
    if settings.name:
        return f"{settings.name}-{benchmark}" if several else settings.name
    if settings.predictions:
        who = Path(settings.predictions).stem
    elif settings.adapter:
        who = settings.adapter.strip("/").replace("/", "-")
    else:
        who = settings.model.name
    return re.sub(r"[^\w.-]+", "-", f"{who}-{benchmark}")


def read_predictions(bench_name: str, path: Path, limit, languages) -> list[dict]:
    """The benchmark rows of a predictions file, scored; a missing or non-text `response`
    counts as empty (it scores 0)."""
    bench = get_benchmark(bench_name)
    return [scoring.prediction_row(bench, item, item["response"] if isinstance(item.get("response"), str) else "")
            for item in load_items(bench_name, path, limit=limit, languages=languages)]


def run_eval(cfg: DictConfig) -> list[tuple[dict, Path]]:
    """The whole `eval` command; (summary, output folder) per benchmark."""
    settings = preflight.settings(cfg, "eval")  # every value's type and range, the model folder: before any work
    names = settings.benchmarks
    benches = [get_benchmark(name) for name in names]  # every name checked before any work
    several = len(benches) > 1
    outs = [Path(settings.out_dir) / output_name(settings, bench.name, several) for bench in benches]
    languages, limit = settings.languages, settings.limit
    if several and settings.data and Path(settings.data).expanduser().is_file():
        raise UserError(f"data={settings.data} is one file, but {len(names)} benchmarks are named; give the folder "
                        f"that holds their files (e.g. data=../shared/data), or name one benchmark")
    if settings.predictions:
        if several:
            raise UserError(f"predictions={settings.predictions} holds one benchmark's rows; name that one benchmark "
                            f"(benchmark={names[0]}), not {len(names)}")
        source = Path(settings.predictions).expanduser()
        if not source.is_file():
            raise UserError(f"predictions={source} is not a file; give a JSONL of the benchmark's rows plus "
                            f"a \"response\" field")
        redo = steps.redo_set("eval", STEPS, settings.redo)
        predicted = [begin(outs[0], "predict", {"predictions": steps.file_digest(source)}, redo)]
        results = [(read_predictions(benches[0].name, source, limit, languages), {"source": str(source), "model": None})]
    else:
        results, predicted = generate(settings, benches, [runner.EvalPaths(o) for o in outs])
    if settings.judge.kind != "none" and any(bench.rubric for bench in benches):
        sampling, retries, jmeta = judge_settings(settings.judge)
        redo = steps.redo_set("eval", STEPS, settings.redo)
        judge_made = {"kind": jmeta["kind"], "model": jmeta["model"], "segments": jmeta["segments"],
                      "sampling": steps.plain(sampling), "retries": retries}
        for i, bench in enumerate(benches):  # every record checked before the judge starts
            if bench.rubric:
                begin(outs[i], "judge", {"judge": judge_made, "predict": predicted[i]}, redo)
        needed = any(bench.rubric and not runner.all_judged(runner.EvalPaths(out), results[i][0])
                     for i, (bench, out) in enumerate(zip(benches, outs)))

        async def judge_all(engine):
            for i, bench in enumerate(benches):
                if bench.rubric:
                    rows, meta = results[i]
                    rows, meta["judge"] = await runner.run_judge(engine, bench, rows, runner.EvalPaths(outs[i]),
                                                                 sampling, retries, jmeta)
                    results[i] = (rows, meta)

        async def judged():
            if not needed:  # an earlier invocation judged every answer: no judge engine
                return await judge_all(None)
            async with judge_engine(settings.judge, settings.model, settings.engine, settings.ray) as engine:
                await judge_all(engine)

        run_async(judged())
    return [(runner.finish(runner.EvalPaths(out), bench, rows, {"name": out.name, **meta}), out)
            for bench, out, (rows, meta) in zip(benches, outs, results)]


@dataclass
class Plan:
    """One benchmark's generation: its items, sampling and checkpoint."""
    bench: Benchmark
    paths: runner.EvalPaths
    items: list[dict]
    sampling: Sampling
    sampling_meta: dict
    done: SampleLog

    @property
    def finished(self) -> bool:  # an earlier run predicted every item
        return all(item["id"] in self.done for item in self.items)

    def resumed_rows(self) -> list[dict]:
        return [self.done.done[item["id"]]["row"] for item in self.items]


def generate(settings: EvalConfig, benches: list, paths: list[runner.EvalPaths]
             ) -> tuple[list[tuple[list[dict], dict]], list[str]]:
    """(rows, meta) per benchmark, generated on one engine start (none when an earlier run
    predicted every item of every benchmark), and each one's predict step's settings hash."""
    loaded = [answers_per_item(load_items(bench.name, settings.data, limit=settings.limit,
                                          languages=settings.languages), settings.samples)
              for bench in benches]  # first: a data file's problem is named before any model is prepared
    serve = served(settings.adapter, settings.model, settings.loop.sampling, settings.engine, settings.paths)
    model_path, adapters = serve.path, serve.adapters
    adapter_role = "generator" if adapters else None
    plans, predicted = [], []
    redo = steps.redo_set("eval", STEPS, settings.redo)
    for bench, where, items in zip(benches, paths, loaded):
        sampling, sampling_meta = runner.bench_sampling(bench, sampling_from(serve.sampling), settings.max_tokens,
                                                        serve.model.max_model_len)  # the run's, for a run's iteration
        data = benchmark_file(bench, settings.data)
        sampling_meta = {**sampling_meta, "data_file": str(data)}
        predicted.append(begin(where.root, "predict", {
            "model": model_path, "adapter": adapters.get("generator"), "benchmark": bench.name,
            "data": steps.file_digest(data), "samples": settings.samples, "sampling": steps.plain(sampling),
            "seed": settings.seed}, redo))
        plans.append(Plan(bench, where, items, sampling, sampling_meta, runner.resume_log(where, "predictions")))
    meta = {"model": model_path, "adapter": adapters.get("generator")}
    todo = [plan for plan in plans if not plan.finished]
    results = {id(plan): (plan.resumed_rows(), {**meta, "sampling": plan.sampling_meta, "resumed": True})
               for plan in plans if plan.finished}
    if not todo:  # no engine needed
        return [results[id(plan)] for plan in plans], predicted

    async def answered():
        started = time.time()
        async with serving(serve.ready(), adapters, serve.model, serve.engine, settings.ray) as engine:
            log.info("eval: %s engine up in %.0f s for %d benchmark%s", serve.engine.kind, time.time() - started,
                     len(todo), "s" if len(todo) > 1 else "")
            for plan in todo:
                log.info("eval %s: %d items on %s%s", plan.bench.name, len(plan.items), model_path,
                         f" + adapter {adapters['generator']}" if adapters else "")
                rows, generation = await runner.predict(engine, plan.bench, plan.items, plan.paths, plan.sampling,
                                                        adapter_role, settings.seed, plan.done)
                results[id(plan)] = (rows, {**meta, "sampling": plan.sampling_meta, "engine": serve.engine.kind,
                                            **generation})

    run_async(answered())
    return [results[id(plan)] for plan in plans], predicted


def summary_table(summary: dict) -> str:
    """The printed report: the headline scores, then each breakdown on a line."""
    def num(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    score, quality = summary.get("length_score") or {}, summary.get("quality") or {}
    lines = [f"{summary['benchmark']}: {summary['items']} items, mean {num(summary.get('mean_words'))} words",
             f"  length score    {num(score.get('overall'))}"]
    for key in ("by_bucket", "by_type", "by_range", "by_language"):
        if score.get(key):
            lines.append(f"    {key:<13} " + ", ".join(f"{k}={num(v)}" for k, v in score[key].items()))
    if quality:
        lines.append(f"  quality         {num(quality.get('overall'))} ({quality.get('judged')} judged)")
    if summary.get("total") is not None:
        lines.append(f"  total (S)       {num(summary['total'])}")
    for length, info in (summary.get("by_length") or {}).items():
        lines.append(f"    asked {length:>6}: mean {num(info['mean_words'])}, max {info['max_words']} words")
    return "\n".join(lines)


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py): each benchmark's summary and where its results are."""
    for summary, out in run_eval(cfg):
        print(summary_table(summary))
        print(f"results: {out}")
