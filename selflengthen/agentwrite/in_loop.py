"""AgentWrite as stage 3 of a loop iteration (`loop.synth=agentwrite` or `both`): the
generator plans each of the iteration's instructions, then writes it paragraph by paragraph
(write.py), and the kept rows take extended.jsonl's shape. An AgentWrite row's `initial` is
the generator's draft for the same instruction (its first surviving sample), so the
extender learns draft -> the planned long text; an instruction with no draft trains the
generator only. pipeline/stages/synth.py picks the method and writes the stage."""
from __future__ import annotations

from selflengthen.agentwrite.write import agentwrite_all, keep_rows, plan_vs_actual
from selflengthen.config import schema
from selflengthen.core.quality import QualityCheck
from selflengthen.engines import Engine, Sampling
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


async def agentwrite_rows(settings: schema.AgentWrite, paths: artifacts.IterationPaths, engine: Engine,
                          sampling: Sampling, check: QualityCheck, adapter: str | None,
                          seed: tuple) -> tuple[list[dict], dict]:
    """(the kept AgentWrite rows, statistics), over the iteration's instructions."""
    instructions = artifacts.read_jsonl(paths.instructions)
    drafts = drafts_by_instruction(artifacts.read_jsonl(paths.initial))
    items = [{"id": r["id"], "instruction": r["instruction"], "language": r["language"]} for r in instructions]
    rows, stats = await agentwrite_all(engine, items, settings, seed=seed,
                                       sampling=sampling, adapter=adapter, checkpoint=paths.checkpoint("agentwrite"))
    kept, dropped = keep_rows(rows, settings.filter, check)
    summary = {**stats, "accepted": len(kept), "kept_after_drop_short": len(kept), "dropped": dropped,
               "attempts": len(items), "attempt_accept_rate": round(len(kept) / len(items), 4) if items else None,
               "quality": check.summary(), "adapter": adapter, "plan_vs_actual": plan_vs_actual(rows)}
    return [as_extended(r, drafts.get(r["id"])) for r in kept], summary
