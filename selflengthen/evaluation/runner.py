"""Running a benchmark: generate every item's response on an engine (all items in flight
together), judge them on a (possibly different) engine, score, and write
`predictions.jsonl`, `summary.json` and the benchmark's plot into one folder.

Every finished item and every finished judgement is appended to a checkpoint as it
finishes (`partial/`), so a rerun skips what is already predicted or judged. Pure scoring
lives in scoring.py and rubrics.py; this module only orchestrates and writes files.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path

from selflengthen.core import progress, signals
from selflengthen.engines import Engine, Request, Sampling, usage_delta
from selflengthen.evaluation import rubrics, scoring
from selflengthen.evaluation.benchmarks import Benchmark
from selflengthen.store import artifacts
from selflengthen.store.samples import SampleLog, stable_seed


@dataclass(frozen=True)
class EvalPaths:
    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def plot(self) -> Path:
        return self.root / "plot.png"

    def partial(self, what: str) -> Path:
        return self.root / "partial" / f"{what}.jsonl"


def resume_log(paths: EvalPaths, what: str) -> SampleLog:
    """The checkpoint of `what` (predictions or judgements), with the rows of an earlier
    finished evaluation in this folder counted as done: a rerun asks nothing twice."""
    log = SampleLog(paths.partial(what))
    if paths.predictions.exists():
        for row in artifacts.read_jsonl(paths.predictions):
            if row["id"] in log:
                continue
            if what == "predictions":
                log.done[row["id"]] = {"id": row["id"], "row": {k: v for k, v in row.items()
                                                                 if k not in ("judge", "judge_tries", "quality")}}
            elif row.get("judge_tries"):
                log.done[row["id"]] = {k: row.get(k) for k in ("id", "judge", "judge_tries", "quality")}
    return log


def bench_sampling(bench: Benchmark, loop_sampling: Sampling, max_tokens: int | None,
                   max_model_len: int) -> tuple[Sampling, dict]:
    """The benchmark's own sampling (LongBench-Write, Ruler: temperature 0.5 and its max new
    tokens; LonGen: the loop's), capped by `max_tokens` and the model's context; the cap
    and what set it are returned for the summary. (The engine also leaves room for each
    prompt within the context.)"""
    sampling = loop_sampling
    if bench.temperature is not None:  # the benchmark's own inference: its temperature, only end-of-turn stops
        sampling = replace(loop_sampling.with_temperature(bench.temperature), stop=())
    own = bench.max_new_tokens or loop_sampling.max_tokens
    caps = {"benchmark": own, "config": int(max_tokens) if max_tokens else None, "context": int(max_model_len)}
    used = min(v for v in caps.values() if v is not None)
    capped_by = None if used == own else next(k for k in ("config", "context") if caps[k] == used)
    return sampling.with_max_tokens(used), {"temperature": sampling.temperature, "stop": list(sampling.stop),
                                            "max_tokens_benchmark": own,
                                            "max_tokens_used": used, "capped_by": capped_by,
                                            "max_model_len": int(max_model_len)}


async def generate_predictions(engine: Engine, bench: Benchmark, items: list[dict], sampling: Sampling,
                               adapter: str | None, log: SampleLog, seed: int = 0) -> list[dict]:
    """Every item's scored prediction (items already in `log` are not asked again)."""

    async def one(item: dict) -> None:
        done = await engine.complete(Request([{"role": "user", "content": item["prompt"]}], adapter=adapter,
                                             seed=stable_seed(seed, "eval", bench.name, item["id"]), key=item["id"]),
                                     sampling)
        row = scoring.prediction_row(bench, item, done.text)
        row.update(finish_reason=done.finish_reason, completion_tokens=done.completion_tokens)
        log.add({"id": item["id"], "row": row})
        progress.advance()

    progress.expect(len(items), done=sum(item["id"] in log for item in items))
    await asyncio.gather(*(one(item) for item in items if item["id"] not in log))
    return [log.done[item["id"]]["row"] for item in items]


async def ask_judge(engine: Engine, rubric: str, messages: list[dict], sampling: Sampling, retries: int, key: str,
                    seed_parts: tuple, adapter: str | None = None) -> tuple[dict | None, int]:
    """(the parsed scores or None, tries): the same question re-asked until it parses."""
    scores, tries = None, 0
    for tries in range(1, retries + 1):
        answer = await engine.complete(Request(messages, adapter=adapter, key=key,
                                               seed=stable_seed(*seed_parts, tries)), sampling)
        scores = rubrics.parse_judgement(rubric, answer.text)
        if scores is not None:
            break
    return scores, tries


async def judge_segments(engine: Engine, bench: Benchmark, row: dict, sampling: Sampling, retries: int, k: int,
                         adapter: str | None = None) -> list[float | None]:
    """The "segment" rubric's quality (0..100, None when unparsable) of each of the k parts
    of a response (core/signals.segments), each read after the text before it."""
    parts = signals.segments(row["response"], k)

    async def part(i: int) -> float | None:
        messages = rubrics.segment_messages(row["prompt"], "".join(parts[:i]), parts[i], i + 1, len(parts),
                                            row["language"])
        scores, _ = await ask_judge(engine, "segment", messages, sampling, retries, row["id"],
                                    ("judge-segment", bench.name, row["id"], i), adapter)
        return rubrics.quality_score("segment", scores) if scores else None

    return list(await asyncio.gather(*(part(i) for i in range(len(parts)))))


async def judge_predictions(engine: Engine, bench: Benchmark, rows: list[dict], sampling: Sampling, retries: int,
                            log: SampleLog, adapter: str | None = None, segments: int = 0) -> list[dict]:
    """Rows with `judge` (the parsed scores, or None when unparsable after `retries` tries),
    `judge_tries` and `quality`, and with `segments` > 0 `segment_quality` (one judged score
    per part of the response, judge.segment_messages); judged rows in `log` are not asked again."""
    rubric = bench.rubric

    async def one(row: dict) -> None:
        scores, tries, by_part = None, 0, None
        if row["response"].strip():
            messages = rubrics.judge_messages(rubric, row["prompt"], row["response"], row["language"])
            scores, tries = await ask_judge(engine, rubric, messages, sampling, retries, row["id"],
                                            ("judge", bench.name, row["id"]), adapter)
            if segments:
                by_part = await judge_segments(engine, bench, row, sampling, retries, segments, adapter)
        log.add({"id": row["id"], "judge": scores, "judge_tries": tries, "segment_quality": by_part,
                 "quality": rubrics.quality_score(rubric, scores) if scores else (0.0 if not row["response"].strip()
                                                                                  else None)})

    await asyncio.gather(*(one(row) for row in rows if row["id"] not in log))
    out = []
    for row in rows:
        entry = log.done[row["id"]]
        out.append({**row, "judge": entry["judge"], "judge_tries": entry["judge_tries"], "quality": entry["quality"],
                    **({"segment_quality": entry["segment_quality"]} if entry.get("segment_quality") else {})})
    return out


def write_results(paths: EvalPaths, bench: Benchmark, rows: list[dict], meta: dict) -> dict:
    """predictions.jsonl, the plot, then summary.json last (its presence = complete)."""
    artifacts.write_jsonl(paths.predictions, rows)
    summary = {**scoring.summarize(bench, rows), **meta}
    try:
        plot = bench.plot(rows, summary, paths.plot)
        summary["plot"] = plot.name
    except Exception as err:  # noqa: BLE001 - a plot must never cost the results
        summary["plot_error"] = f"{type(err).__name__}: {err}"
    artifacts.write_json(paths.summary, summary)
    return summary


async def evaluate(engine: Engine, bench: Benchmark, items: list[dict], out: Path, *, sampling: Sampling,
                   sampling_meta: dict, adapter: str | None, meta: dict, seed: int = 0,
                   judge_engine: Engine | None = None, judge_sampling: Sampling | None = None,
                   judge_retries: int = 3, judge_meta: dict | None = None) -> dict:
    """Generate (and judge when a judge engine is given), score and write; the summary."""
    paths = EvalPaths(out)
    rows, generation = await predict(engine, bench, items, paths, sampling, adapter, seed,
                                     resume_log(paths, "predictions"))
    meta = {**meta, "sampling": sampling_meta, **generation}
    if judge_engine is not None and bench.rubric:
        rows, meta["judge"] = await run_judge(judge_engine, bench, rows, paths, judge_sampling, judge_retries,
                                              judge_meta or {})
    return finish(paths, bench, rows, meta)


async def predict(engine: Engine, bench: Benchmark, items: list[dict], paths: EvalPaths, sampling: Sampling,
                  adapter: str | None, seed: int, log: SampleLog) -> tuple[list[dict], dict]:
    """generate_predictions, with its wall time and what the engine served for it."""
    started, before = time.time(), engine.usage()
    rows = await generate_predictions(engine, bench, items, sampling, adapter, log, seed)
    return rows, {"generation_seconds": round(time.time() - started, 2),
                  "generation_usage": usage_delta(before, engine.usage())}


async def run_judge(judge_engine: Engine, bench: Benchmark, rows: list[dict], paths: EvalPaths,
                    judge_sampling: Sampling | None, retries: int, judge_meta: dict) -> tuple[list[dict], dict]:
    started, before = time.time(), judge_engine.usage()
    rows = await judge_predictions(judge_engine, bench, rows, judge_sampling or Sampling(temperature=0.5,
                                                                                        max_tokens=1024),
                                   retries, resume_log(paths, "judgements"), segments=judge_meta.get("segments", 0))
    used = usage_delta(before, judge_engine.usage())
    prompt_tokens = sum(u.get("prompt_tokens", 0) for u in used.values())
    completion_tokens = sum(u.get("completion_tokens", 0) for u in used.values())
    info = {**judge_meta, "rubric": bench.rubric, "seconds": round(time.time() - started, 2),
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "unparsable": sum(1 for r in rows if r["judge"] is None and r["response"].strip())}
    prices = judge_meta.get("price_per_million_tokens") or {}
    if prices.get("prompt") is not None and prices.get("completion") is not None:
        info["cost"] = round(prompt_tokens / 1e6 * prices["prompt"] + completion_tokens / 1e6 * prices["completion"], 6)
    return rows, info


def finish(paths: EvalPaths, bench: Benchmark, rows: list[dict], meta: dict) -> dict:
    summary = write_results(paths, bench, rows, meta)
    for what in ("predictions", "judgements"):
        paths.partial(what).unlink(missing_ok=True)
    if paths.partial("predictions").parent.is_dir() and not any(paths.partial("predictions").parent.iterdir()):
        paths.partial("predictions").parent.rmdir()
    return summary
