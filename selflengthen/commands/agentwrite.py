"""`python -m selflengthen agentwrite input=FILE`: AgentWrite (LongWriter; algorithm.md 2)
over a file of writing instructions, on the configured engine (one start, every
instruction in flight together, each one's steps in order), with the base model or an
iteration's generator (`adapter=RUN/iter_K`).

Results go to `<out_dir>/<name>/`:
  checkpoint.jsonl     every finished plan and step as it finishes: a killed run resumes at
                       the next step of each instruction (nothing is asked twice)
  settings.json        the write step's record (store/steps.py): what the text depends on
                       (model, adapter, seed, sampling, agentwrite, the input file's digest);
                       resuming with other settings is refused naming the changed keys, unless
                       redo=write (the checkpoint is then discarded and every text written again)
  rows.jsonl           one row per planned instruction: plan, per-paragraph planned vs
                       written words, response, and `kept` (agentwrite.filter)
  plan_vs_actual.png   planned against written words per paragraph
  train/               the LongWriter-style training set (agentwrite/mix.py)
  metrics.json         written last: plan rejections, steps, tokens, paragraphs/s, plan vs actual,
                       judge-free quality signals of the kept responses (`signals`)
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from selflengthen import preflight
from selflengthen.config.schema import AgentWriteConfig
from selflengthen.agentwrite import mix
from selflengthen.agentwrite.write import (agentwrite_all, keep_rows, kept_signals, pending, plan_vs_actual,
                                          plot_plan_vs_actual)
from selflengthen.core.errors import UserError, run_async
from selflengthen.core.prompting import LANGUAGES
from selflengthen.core.quality import QualityCheck
from selflengthen.core.text import detect_language
from selflengthen.engines.factory import sampling_from, serving
from selflengthen.models.resolve import Served, served
from selflengthen.store import artifacts, jsonl, steps
from selflengthen.store.samples import stable_seed

log = logging.getLogger("selflengthen")
FIELDS = ("instruction", "language", "id")  # a run's iter_K/instructions.jsonl rows hold exactly these


def read_instructions(spec: str | None, limit: int | None = None) -> list[dict]:
    """Items {id, instruction, language} of a JSONL of instructions. `language` defaults
    to the detected one; `id` to a digest of the text (so a resume matches rows, whatever
    their order). A repeated instruction is read once."""
    if not spec:
        raise UserError("give the instructions: python -m selflengthen agentwrite input=FILE (a JSONL of "
                        "{\"instruction\": ..., \"language\": \"en\"|\"zh\"} rows, or a run's "
                        "iter_K/instructions.jsonl)")
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise UserError(f"input={spec} is not a file; give a JSONL of {{\"instruction\": ..., \"language\": ...}} "
                        f"rows, or a run's iterations/RUN/iter_K/instructions.jsonl")
    items: dict[str, dict] = {}
    numbered = jsonl.user_rows(path, f"input {path}", 'a JSON object with an "instruction"')
    for n, row in numbered:
        where = f"input {path} line {n}"
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise UserError(f"{where}: unknown field(s) {unknown}; a row holds \"instruction\" and optionally "
                            f"\"language\" ({'|'.join(LANGUAGES)}) and \"id\"")
        text = row.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}: \"instruction\" must be a non-empty string")
        language = row.get("language") or detect_language(text)
        if language not in LANGUAGES:
            raise UserError(f"{where}: language {language!r} is not one of {list(LANGUAGES)}")
        ident = str(row["id"]) if row.get("id") is not None else f"aw-{stable_seed(language, text.strip()):08x}"
        if ident in items:
            if items[ident]["instruction"] == text.strip():
                continue
            raise UserError(f"{where}: id {ident!r} is used twice for different instructions; make ids unique")
        items[ident] = {"id": ident, "instruction": text.strip(), "language": language}
    if not items:
        raise UserError(f"input {path} holds no instructions")
    return list(items.values())[:limit] if limit else list(items.values())


def output_name(settings: AgentWriteConfig) -> str:
    if settings.name:
        return settings.name
    source = Path(settings.input)
    stem = f"{source.parent.parent.name}-{source.parent.name}" if source.stem == "instructions" else source.stem
    who = "-".join(Path(settings.adapter).parts[-2:]) if settings.adapter else settings.model.name
    return re.sub(r"[^\w.-]+", "-", stem if who == stem else f"{stem}-{who}")


STEPS = ("write",)  # plan and write every instruction; rows, the plot and the training set follow each time


def settings_of(settings: AgentWriteConfig, serve: Served) -> dict:
    """What the written text depends on: a resume must keep it (agentwrite.filter, mix and
    max_items_in_flight change what is kept or how fast, not the text)."""
    agentwrite = settings.agentwrite.model_dump(exclude={"filter", "mix", "max_items_in_flight"})
    return {"model": serve.path, "adapter": serve.adapters.get("generator"), "seed": settings.seed,
            "sampling": serve.sampling.model_dump(), "agentwrite": agentwrite,
            "input": steps.file_digest(Path(settings.input).expanduser())}


def write_step(out: Path, made_with: dict, redo: str | None) -> None:
    """The write step under the step contract (store/steps.py): its record, settings.json,
    is written before any text; a resume with other settings is refused naming the changed
    keys, or with redo=write starts over (the checkpoint of the earlier texts is removed)."""
    step = steps.Step("agentwrite", "write", out, out / "settings.json", made_with, "name=NEW")
    if step.record.exists() and "made_with" not in (before := artifacts.read_json(step.record)):
        # recorded by an earlier version (the settings alone): the keys it did not record are taken as they are now
        artifacts.write_json(step.record, replace(step, made_with={**made_with, **before}).fields())
    made_before = step.record.exists()
    if not steps.reusable(step, redo=bool(steps.redo_set("agentwrite", STEPS, redo))) and made_before:
        (out / "checkpoint.jsonl").unlink(missing_ok=True)  # redone: no earlier text is resumed
    step.mark()


def run_agentwrite(cfg: DictConfig) -> tuple[dict, Path]:
    """The whole verb; returns the metrics and the output folder."""
    settings = preflight.settings(cfg, "agentwrite")
    items = read_instructions(settings.input, settings.limit)
    mixing = settings.agentwrite.mix
    general = mix.load_general(mixing.general, mixing.general_split) if mixing.general else []
    out = Path(settings.out_dir) / output_name(settings)
    serve = served(settings.adapter, settings.model, settings.loop.sampling, settings.engine, settings.paths)
    model_path, adapters = serve.path, serve.adapters
    write_step(out, settings_of(settings, serve), settings.redo)
    checkpoint = out / "checkpoint.jsonl"
    todo = pending(items, checkpoint)

    async def written():
        if not todo:  # everything is in the checkpoint: no engine needed
            return await agentwrite_all(None, items, settings.agentwrite, seed=settings.seed, checkpoint=checkpoint)
        async with serving(serve.ready(), adapters, serve.model, serve.engine, settings.ray) as engine:
            log.info("agentwrite: %d instructions (%d to finish) on %s%s", len(items), todo, model_path,
                     f" + adapter {adapters['generator']}" if adapters else "")
            return await agentwrite_all(engine, items, settings.agentwrite, seed=settings.seed,
                                        sampling=sampling_from(serve.sampling),
                                        adapter="generator" if adapters else None, checkpoint=checkpoint)

    rows, stats = run_async(written())
    (out / "metrics.json").unlink(missing_ok=True)  # written last again
    check = QualityCheck(settings.loop.quality_rules())
    kept, dropped = keep_rows(rows, settings.agentwrite.filter, check)
    kept_ids = {r["id"] for r in kept}
    artifacts.write_jsonl(out / "rows.jsonl", [{**r, "kept": r["id"] in kept_ids} for r in rows])
    plot_plan_vs_actual(rows, out / "plan_vs_actual.png")
    info = {"model": model_path, "adapter": adapters.get("generator"), "general": mixing.general,
            "general_per_long": mixing.general_per_long, "input": settings.input}
    training = mix.export_set(mix.mix(kept, general, mixing.general_per_long, settings.seed),
                              out / "train", info=info)
    metrics = {**stats, "plan_vs_actual": plan_vs_actual(rows),
               "kept": len(kept), "dropped": dropped, "quality": check.summary(), "signals": kept_signals(kept),
               "training_set": {"path": "train", **training["counts"]}, "model": model_path,
               "adapter": adapters.get("generator"), "input": settings.input, "engine": settings.engine.kind,
               "max_items_in_flight": settings.agentwrite.max_items_in_flight}
    artifacts.write_json(out / "metrics.json", metrics)
    return metrics, out


def summary_text(m: dict) -> str:
    """The printed report."""
    def num(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    rejected = ", ".join(f"{k} {v}" for k, v in m["plans_rejected"].items())
    para, resp = m["plan_vs_actual"]["paragraphs"], m["plan_vs_actual"]["responses"]
    sources = m["training_set"].get("sources", {})
    return "\n".join([
        f"agentwrite: {m['items']} instructions, {m['planned']} planned (rejected: {rejected}), "
        f"{m['rows']} responses",
        f"  paragraphs   {m['steps_written']} written ({m['resumed_steps']} resumed, {m['empty_steps']} empty, "
        f"{m['truncated_steps']} cut at max_tokens); this run: {m['steps_this_run']} in {m['seconds']} s = "
        f"{num(m['paragraphs_per_second'], '{:.3f}')} paragraphs/s",
        f"  per paragraph  planned {num(para['mean_planned'])}, written {num(para['mean_actual'])} words "
        f"(ratio {num(para['ratio'], '{:.2f}')}, median {num(para['median_ratio'], '{:.2f}')}, "
        f"{num(para['within_20pct'] and 100 * para['within_20pct'], '{:.0f}')}% within 20% of plan)",
        f"  per response   planned {num(resp['mean_planned'])}, written {num(resp['mean_actual'])} words",
        f"  training set   {m['kept']} kept (dropped: {m['dropped'] or 'none'}) + {sources.get('general', 0)} "
        f"general rows -> {m['training_set']['path']}/",
    ])


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py): the summary and where the results are."""
    metrics, out = run_agentwrite(cfg)
    print(summary_text(metrics))
    print(f"results: {out}")
