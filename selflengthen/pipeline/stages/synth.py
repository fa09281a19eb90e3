"""Stage 3 of an iteration as `loop.synth` chooses: how the longer responses are made.

  extend      the extender lengthens the generator's responses (stages/extend.py; the paper)
  agentwrite  AgentWrite (selflengthen/agentwrite/; LongWriter): the generator plans each of the
              iteration's instructions, then writes it paragraph by paragraph
  both        both on the same engine at once, every row tagged with its method

Whatever the choice, the stage writes `extended.jsonl` and `manifests/extend.json` (the
stage keeps its name, so resume-by-stage and runs made before `loop.synth` work as
before), and curate and train consume the rows unchanged: the generator learns
instruction -> long response from every row. AgentWrite's rows (agentwrite/in_loop.py)
carry the generator's draft as `initial`, so the extender stays trained and usable when a
later run or iteration switches back to `extend`. AgentWrite runs on the generator's adapter (the model being lengthened plans and writes for
itself: no stronger teacher, as in Self-Lengthen). Its responses are kept by
agentwrite.filter (word bounds and the quality check of their language); drop-short, the
extender's length-biased resampling, is not applied to them.
"""
from __future__ import annotations

import asyncio

from selflengthen.agentwrite.in_loop import agentwrite_rows
from selflengthen.config import schema
from selflengthen.core.quality import QualityCheck
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.pipeline.stages import extend
from selflengthen.store import artifacts


def merged_quality(parts: list[dict]) -> dict:
    checked = sum(p["checked"] for p in parts)
    passed = sum(p["passed"] for p in parts)
    failures: dict[str, int] = {}
    for p in parts:
        for reason, n in p["failures"].items():
            failures[reason] = failures.get(reason, 0) + n
    return {"checked": checked, "passed": passed, "failures": failures,
            "pass_rate": round(passed / checked, 4) if checked else None}


def settings_of(settings: schema.Config) -> dict:
    """The stage's settings: `loop.synth` and the settings of the methods it runs."""
    synth = settings.loop.synth
    return {"synth": synth, "extend": settings.loop.extend if synth in ("extend", "both") else None,
            "agentwrite": settings.agentwrite if synth in ("agentwrite", "both") else None}


async def run(chosen: dict, inputs: Inputs) -> Output:
    """Write iter_k/extended.jsonl by `loop.synth`."""
    synth, paths = chosen["synth"], inputs.paths
    methods = {}
    if chosen["extend"] is not None:
        methods["extend"] = extend.extended_rows(chosen["extend"], inputs)
    if chosen["agentwrite"] is not None:
        methods["agentwrite"] = agentwrite_rows(chosen["agentwrite"], paths, inputs.engine, inputs.sampling,
                                                QualityCheck(inputs.rules), inputs.adapter("generator"),
                                                seed=(inputs.seed, "agentwrite", paths.k))
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
    return Output(counts=counts, outputs=[paths.extended], checkpoints=tuple(methods))


# the stage keeps the name "extend" whatever loop.synth is (runs made before loop.synth resume)
STAGE = Stage("extend", unit="attempt", settings=settings_of, body=run, engine=True, writes=("extended.jsonl",))
