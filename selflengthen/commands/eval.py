"""`python -m selflengthen eval`: one benchmark, or several (`benchmark=[longen,ruler]`), on
a base model, on an iteration of a run (its generator adapter on its base model), or on a
file of predictions made elsewhere.

Generation runs on the configured engine, started once for all the benchmarks (each
benchmark's items all in flight together, one benchmark after the other, so each one's
token accounting is its own); the judge, when configured, runs afterwards on its own engine
(the generation engine is shut down first, so both fit on the same accelerators). Results
go to `<out_dir>/<name>/` per benchmark: predictions.jsonl, summary.json (last), plot.png.
"""
from __future__ import annotations

import json
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from selflengthen import config
from selflengthen.core.errors import UserError, run_async
from selflengthen.engines import Sampling
from selflengthen.engines.factory import serving
from selflengthen.evaluation import runner, scoring
from selflengthen.evaluation.benchmarks import Benchmark, benchmark_file, get_benchmark, load_items
from selflengthen.store.samples import SampleLog

log = logging.getLogger("selflengthen")


def resolve_adapter(spec: str, iterations_dir: Path) -> tuple[Path, str | None, Path | None]:
    """(adapter folder, base model it was trained on, the run's config.yaml or None) for
    `RUN/iter_K` (a finished iteration), an iteration folder, or an adapter folder."""
    for c in (Path(spec).expanduser(), iterations_dir / spec):
        if (c / "adapter_config.json").exists():
            base = json.loads((c / "adapter_config.json").read_text()).get("base_model_name_or_path")
            return c, base, None
        if (c / "adapters" / "generator" / "adapter_config.json").exists():
            if not (c / "manifest.json").exists():
                raise UserError(f"adapter={spec!r}: iteration {c} is not finished (no manifest.json); finish the run "
                                f"first (python -m selflengthen run with its run.name), or name an earlier iteration")
            base = json.loads((c / "manifest.json").read_text()).get("model")
            run_config = c.parent / "config.yaml"
            return c / "adapters" / "generator", base, run_config if run_config.exists() else None
    raise UserError(f"adapter={spec!r} is neither RUN/iter_K under {iterations_dir}/ with a trained generator nor "
                    f"an adapter folder (with adapter_config.json); give e.g. adapter=tiny/iter_2")


def adopt_run_settings(cfg: DictConfig, run_config: Path | None, adapter_path: Path) -> None:
    """Evaluating a run's iteration with no model given: serve it as the run did (its model
    settings, LoRA rank and sampling), not with the default preset's."""
    with open_dict(cfg):
        if run_config is not None and cfg.model.path == config.EMBEDDED_TINY:
            run = OmegaConf.load(run_config)
            cfg.model = run.model
            cfg.loop.sampling = run.loop.sampling
        rank = int(json.loads((adapter_path / "adapter_config.json").read_text()).get("r") or 0)
        cfg.engine.max_lora_rank = max(int(cfg.engine.max_lora_rank), rank)


def benchmark_names(cfg: DictConfig) -> list[str]:
    """`benchmark=NAME` or `benchmark=[A,B]`: the names, in order, each once."""
    value = cfg.benchmark
    if value is None:
        raise UserError("benchmark= is not set; give one (benchmark=longbench_write) or a list "
                        "(benchmark=[longen,ruler])")
    names = [str(value)] if isinstance(value, str) else [str(v) for v in value]
    if not names:
        raise UserError("benchmark=[] names no benchmark; give one (benchmark=longbench_write) or a list "
                        "(benchmark=[longen,ruler])")
    return list(dict.fromkeys(names))


def output_name(cfg: DictConfig, benchmark: str, several: bool = False) -> str:
    if cfg.name:
        return f"{cfg.name}-{benchmark}" if several else str(cfg.name)
    if cfg.predictions:
        who = Path(str(cfg.predictions)).stem
    elif cfg.adapter:
        who = str(cfg.adapter).strip("/").replace("/", "-")
    else:
        who = str(cfg.model.name)
    return re.sub(r"[^\w.-]+", "-", f"{who}-{benchmark}")


@asynccontextmanager
async def judge_engine(cfg: DictConfig):
    """The judge's engine (None when `judge=none`), opened like any engine: `judge=openai`
    is its own engine config; `judge=vllm` is the run's vLLM engine config serving the
    judge's model."""
    jcfg = cfg.judge
    if jcfg.kind == "none":
        yield None
        return
    engine_cfg = jcfg if jcfg.kind == "openai" else {**OmegaConf.to_container(cfg.engine, resolve=True),
                                                       "kind": "vllm"}
    model = {"max_model_len": jcfg.get("max_model_len"), "dtype": jcfg.get("dtype"),
             "trust_remote_code": jcfg.get("trust_remote_code", False), "end_of_turn": list(jcfg.end_of_turn)}
    judge_cfg = OmegaConf.create({"engine": engine_cfg, "model": model, "ray": cfg.ray})
    async with serving(str(jcfg.model), {}, judge_cfg) as engine:
        yield engine


def judge_settings(cfg: DictConfig) -> tuple[Sampling, int, dict]:
    j = cfg.judge
    meta = {"kind": str(j.kind), "model": str(j.model)}
    meta["price_per_million_tokens"] = OmegaConf.to_container(j.price_per_million_tokens, resolve=True)
    return Sampling(temperature=float(j.temperature), top_p=1.0, top_k=-1, repetition_penalty=1.0,
                    max_tokens=int(j.max_tokens)), int(j.retries), meta


def read_predictions(bench_name: str, path: Path, limit, languages) -> list[dict]:
    """The benchmark rows of a predictions file, scored; a missing or non-text `response`
    counts as empty (it scores 0)."""
    bench = get_benchmark(bench_name)
    return [scoring.prediction_row(bench, item, item["response"] if isinstance(item.get("response"), str) else "")
            for item in load_items(bench_name, path, limit=limit, languages=languages)]


def run_eval(cfg: DictConfig) -> list[tuple[dict, Path]]:
    """The whole `eval` command; (summary, output folder) per benchmark."""
    config.validate(cfg, in_run_eval=False)  # every value's type and range, the model folder: before any work
    names = benchmark_names(cfg)
    benches = [get_benchmark(name) for name in names]  # every name checked before any work
    several = len(benches) > 1
    outs = [Path(str(cfg.out_dir)) / output_name(cfg, bench.name, several) for bench in benches]
    languages = list(cfg.languages) if cfg.languages else None
    limit = int(cfg.limit) if cfg.limit else None
    if several and cfg.data and Path(str(cfg.data)).expanduser().is_file():
        raise UserError(f"data={cfg.data} is one file, but {len(names)} benchmarks are named; give the folder "
                        f"that holds their files (e.g. data=../shared/data), or name one benchmark")
    if cfg.predictions:
        if several:
            raise UserError(f"predictions={cfg.predictions} holds one benchmark's rows; name that one benchmark "
                            f"(benchmark={names[0]}), not {len(names)}")
        source = Path(str(cfg.predictions)).expanduser()
        if not source.is_file():
            raise UserError(f"predictions={source} is not a file; give a JSONL of the benchmark's rows plus "
                            f"a \"response\" field")
        results = [(read_predictions(benches[0].name, source, limit, languages), {"source": str(source), "model": None})]
    else:
        results = generate(cfg, benches, [runner.EvalPaths(o) for o in outs], limit, languages)
    if cfg.judge.kind != "none" and any(bench.rubric for bench in benches):
        sampling, retries, jmeta = judge_settings(cfg)

        async def judged():
            async with judge_engine(cfg) as engine:
                for i, bench in enumerate(benches):
                    if bench.rubric:
                        rows, meta = results[i]
                        rows, meta["judge"] = await runner.run_judge(engine, bench, rows, runner.EvalPaths(outs[i]),
                                                                     sampling, retries, jmeta)
                        results[i] = (rows, meta)

        run_async(judged())
    return [(runner.finish(runner.EvalPaths(out), bench, rows, {"name": out.name, **meta}), out)
            for bench, out, (rows, meta) in zip(benches, outs, results)]


def model_and_adapter(cfg: DictConfig) -> tuple[str, dict[str, str]]:
    """The model to serve and its adapters: {"generator": folder} for `adapter=` (a run's
    iteration, served as the run did, on the base model it was trained on), else {}."""
    from selflengthen.pipeline import loop

    adapters, base_of_adapter = {}, None
    if cfg.adapter:
        adapter_path, base_of_adapter, run_config = resolve_adapter(str(cfg.adapter),
                                                                    Path(str(cfg.paths.iterations_dir)))
        adapters = {"generator": str(adapter_path)}
        adopt_run_settings(cfg, run_config, adapter_path)
    model_path = loop.resolve_model(cfg) if not (base_of_adapter and cfg.model.path == config.EMBEDDED_TINY) \
        else base_of_adapter
    if base_of_adapter and Path(model_path).resolve() != Path(base_of_adapter).resolve():
        raise UserError(f"adapter {cfg.adapter} was trained on {base_of_adapter}, not on model.path={model_path}; "
                        f"leave model.path unset or give that base model")
    return model_path, adapters


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


def generate(cfg: DictConfig, benches: list, paths: list[runner.EvalPaths], limit,
             languages) -> list[tuple[list[dict], dict]]:
    """(rows, meta) per benchmark, generated on one engine start (none when an earlier run
    predicted every item of every benchmark)."""
    from selflengthen.pipeline import loop

    loaded = [load_items(bench.name, cfg.data, limit=limit, languages=languages) for bench in benches]  # first:
    model_path, adapters = model_and_adapter(cfg)  # a data file's problem is named before any model is prepared
    adapter_role = "generator" if adapters else None
    plans = []
    for bench, where, items in zip(benches, paths, loaded):
        sampling, sampling_meta = runner.bench_sampling(bench, loop.sampling_from(cfg), cfg.max_tokens,
                                                        int(cfg.model.max_model_len))  # after the run's settings
        sampling_meta = {**sampling_meta, "data_file": str(benchmark_file(bench, cfg.data))}
        plans.append(Plan(bench, where, items, sampling, sampling_meta, runner.resume_log(where, "predictions")))
    meta = {"model": model_path, "adapter": adapters.get("generator")}
    todo = [plan for plan in plans if not plan.finished]
    results = {id(plan): (plan.resumed_rows(), {**meta, "sampling": plan.sampling_meta, "resumed": True})
               for plan in plans if plan.finished}
    if not todo:  # no engine needed
        return [results[id(plan)] for plan in plans]

    async def predicted():
        started = time.time()
        async with serving(model_path, adapters, cfg) as engine:
            log.info("eval: %s engine up in %.0f s for %d benchmark%s", cfg.engine.kind, time.time() - started,
                     len(todo), "s" if len(todo) > 1 else "")
            for plan in todo:
                log.info("eval %s: %d items on %s%s", plan.bench.name, len(plan.items), model_path,
                         f" + adapter {adapters['generator']}" if adapters else "")
                rows, generation = await runner.predict(engine, plan.bench, plan.items, plan.paths, plan.sampling,
                                                        adapter_role, int(cfg.seed), plan.done)
                results[id(plan)] = (rows, {**meta, "sampling": plan.sampling_meta, "engine": str(cfg.engine.kind),
                                            **generation})

    run_async(predicted())
    return [results[id(plan)] for plan in plans]


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
