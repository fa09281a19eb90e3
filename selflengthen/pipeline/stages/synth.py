"""Stage 3 of an iteration as `loop.synth` chooses: how the longer responses are made.

  extend      the extender lengthens the generator's responses (stages/extend.py; the paper)
  agentwrite  AgentWrite (selflengthen/agentwrite/write.py; LongWriter): the generator plans each of the
              iteration's instructions, then writes it paragraph by paragraph
  both        both on the same engine at once, every row tagged with its method

Whatever the choice, the stage writes `extended.jsonl` and `manifests/extend.json` (the
stage keeps its name, so resume-by-stage and runs made before `loop.synth` work as
before), and curate and train consume the rows unchanged: the generator learns
instruction -> long response from every row. An AgentWrite row's `initial` is the
generator's draft for the same instruction (its first surviving sample), so the extender
learns draft -> the planned long text, and stays trained and usable when a later run or
iteration switches back to `extend`; an instruction with no draft trains the generator only.
AgentWrite runs on the generator's adapter (the model being lengthened plans and writes for
itself: no stronger teacher, as in Self-Lengthen). Its responses are kept by
agentwrite.filter (word bounds and the quality check of their language); drop-short, the
extender's length-biased resampling, is not applied to them.
"""
from __future__ import annotations

import asyncio
import time

from omegaconf import DictConfig

from selflengthen.agentwrite.write import agentwrite_all, keep_rows, plan_vs_actual
from selflengthen.config import SYNTHS
from selflengthen.core.quality import QualityCheck
from selflengthen.engines import Engine, Sampling
from selflengthen.pipeline.stages import extend
from selflengthen.store import artifacts

def drafts_by_instruction(initial: list[dict]) -> dict[str, dict]:
    """The first surviving generator sample (by id) of each instruction."""
    out: dict[str, dict] = {}
    for row in sorted(initial, key=lambda r: r["id"]):
        out.setdefault(row["instruction_id"], row)
    return out


def as_extended(row: dict, draft: dict | None) -> dict:
    """An AgentWrite row in extended.jsonl's shape (plus its plan and paragraphs)."""
    return {"id": f"{row['id']}-aw", "initial_id": draft["id"] if draft else None, "instruction_id": row["id"],
            "language": row["language"], "instruction": row["instruction"],
            "initial": draft["response"] if draft else "", "initial_words": draft["words"] if draft else 0,
            "response": row["response"], "words": row["words"], "method": "agentwrite",
            "planned_words": row["planned_words"], "plan": row["plan"], "paragraphs": row["paragraphs"]}


async def agentwrite_rows(cfg: DictConfig, paths: artifacts.IterationPaths, engine: Engine, sampling: Sampling,
                          check: QualityCheck, adapter: str | None) -> tuple[list[dict], dict]:
    """(the kept AgentWrite rows, statistics), over the iteration's instructions."""
    instructions = artifacts.read_jsonl(paths.instructions)
    drafts = drafts_by_instruction(artifacts.read_jsonl(paths.initial))
    items = [{"id": r["id"], "instruction": r["instruction"], "language": r["language"]} for r in instructions]
    rows, stats = await agentwrite_all(engine, items, cfg.agentwrite, seed=(cfg.seed, "agentwrite", paths.k),
                                       sampling=sampling, adapter=adapter, checkpoint=paths.checkpoint("agentwrite"))
    kept, dropped = keep_rows(rows, cfg.agentwrite.filter, check)
    summary = {**stats, "accepted": len(kept), "kept_after_drop_short": len(kept), "dropped": dropped,
               "attempts": len(items), "attempt_accept_rate": round(len(kept) / len(items), 4) if items else None,
               "quality": check.summary(), "adapter": adapter, "plan_vs_actual": plan_vs_actual(rows)}
    return [as_extended(r, drafts.get(r["id"])) for r in kept], summary


def merged_quality(parts: list[dict]) -> dict:
    checked = sum(p["checked"] for p in parts)
    passed = sum(p["passed"] for p in parts)
    failures: dict[str, int] = {}
    for p in parts:
        for reason, n in p["failures"].items():
            failures[reason] = failures.get(reason, 0) + n
    return {"checked": checked, "passed": passed, "failures": failures,
            "pass_rate": round(passed / checked, 4) if checked else None}


async def run(cfg: DictConfig, paths: artifacts.IterationPaths, engine: Engine, sampling: Sampling,
              check: QualityCheck, adapters: dict[str, str]) -> dict:
    """Write iter_k/extended.jsonl by `loop.synth`; return the stage's statistics."""
    synth = str(cfg.loop.synth)
    assert synth in SYNTHS, synth  # config.validate reports a bad value before any work
    started = time.time()
    methods = {}
    if synth in ("extend", "both"):
        methods["extend"] = extend.extended_rows(cfg, paths, engine, sampling, check,
                                                 "extender" if adapters else None)
    if synth in ("agentwrite", "both"):
        methods["agentwrite"] = agentwrite_rows(cfg, paths, engine, sampling, QualityCheck(check.rules),
                                                "generator" if adapters else None)
    results = dict(zip(methods, await asyncio.gather(*methods.values())))
    rows = sorted((row for kept, _ in results.values() for row in kept), key=lambda r: r["id"])
    by_method = {m: summary for m, (_, summary) in results.items()}
    attempts = sum(s["attempts"] for s in by_method.values())
    accepted = sum(s["accepted"] for s in by_method.values())
    counts = {"synth": synth, "accepted": accepted,
              "kept_after_drop_short": sum(s["kept_after_drop_short"] for s in by_method.values()),
              "attempts": attempts, "attempt_accept_rate": round(accepted / attempts, 4) if attempts else None,
              "quality": merged_quality([s["quality"] for s in by_method.values()]),
              "rows_by_method": {m: sum(r["method"] == m for r in rows) for m in by_method},
              "adapter": by_method.get("extend", by_method.get("agentwrite"))["adapter"],
              "by_method": by_method}
    artifacts.write_jsonl(paths.extended, rows)
    digest = {"synth": synth, "extend": str(cfg.loop.extend) if "extend" in methods else None,
              "agentwrite": str(cfg.agentwrite) if "agentwrite" in methods else None}
    artifacts.write_stage_manifest(paths, "extend", started=started, config_digest=artifacts.config_hash(digest),
                                   counts=counts, outputs=[paths.extended])
    for method in methods:  # their rows are in extended.jsonl now
        paths.checkpoint(method).unlink(missing_ok=True)
    return counts
