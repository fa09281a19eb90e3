"""AgentWrite (LongWriter; algorithm.md 2): a long output built by a model that writes
short ones, by planning first and then writing one paragraph per plan line.

Per item (an instruction), one coroutine: one plan call, parsed by
`plan.parse_plan` (a rejected plan ends the item, counted by reason); then the
plan's steps in order, each call awaiting the previous step's text, since it is part of
the next prompt. Items run concurrently (at most `max_items_in_flight`), so the engine's
batch stays full although each item's steps are sequential. The paragraphs, joined by
blank lines, are the response.

Every finished plan and step is appended to the checkpoint as it finishes (fsync'ed), so
a killed run resumes each item after its last finished step and no paragraph is written
twice. Checkpoint rows (JSONL):
  {"kind": "plan", "id", "rejected": null|reason, "plan": [{index, point, planned_words}],
   "defaulted": n, "text": <the model's plan>}
  {"kind": "step", "id", "index", "text", "words", "planned_words", "finish_reason"}
An empty step (the engine answered nothing, e.g. "no_room" when the prompt fills the
context) is recorded like any other and the item moves on to its next step.

`plan.prefill: true` begins the plan's answer with the first line's label ("Paragraph 1 -
Main point:" / "第1段 - 要点："), so a model that drifts from the format starts in it; the
recorded plan text includes that label.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from selflengthen.config import schema
from selflengthen.core import progress as stage_progress
from selflengthen.core import signals
from selflengthen.store import artifacts
from selflengthen.agentwrite.plan import (
    REJECT_REASONS,
    Plan,
    PlanStep,
    format_step,
    parse_plan,
    plan_request,
    write_request,
)
from selflengthen.core.text import count_words
from selflengthen.engines import Completion, Engine, Request, Sampling
from selflengthen.store.samples import drop_torn_tail, stable_seed


def phase_sampling(base: Sampling, phase: schema.Phase) -> Sampling:
    """`base` with the phase's non-null overrides (max_tokens, temperature, stop)."""
    out = base.with_max_tokens(phase.max_tokens)
    if phase.temperature is not None:
        out = out.with_temperature(phase.temperature)
    if phase.stop is not None:
        out = replace(out, stop=tuple(phase.stop))
    return out


class _Progress:
    """The checkpoint in memory: plans by id, steps by (id, index), and what this run spent."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None and path.exists():
            drop_torn_tail(path)  # a kill mid-append: the next append must start a line of its own
        rows = artifacts.read_jsonl(path) if path is not None and path.exists() else []
        self.plans = {r["id"]: r for r in rows if r.get("kind") == "plan"}
        self.steps = {(r["id"], r["index"]): r for r in rows if r.get("kind") == "step"}
        self.resumed_plans, self.resumed_steps = len(self.plans), len(self.steps)
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.new_steps = 0  # steps written by this run (not resumed)

    def add(self, row: dict) -> None:
        key = row["id"] if row["kind"] == "plan" else (row["id"], row["index"])
        table = self.plans if row["kind"] == "plan" else self.steps
        assert key not in table, f"{row['kind']} {key} finished twice"
        table[key] = row
        self.new_steps += row["kind"] == "step"
        if self.path is not None:
            artifacts.append_jsonl(self.path, [row])

    def finished(self, item_id: str) -> bool:
        """The item's plan is rejected, or every step of it is written."""
        entry = self.plans.get(item_id)
        return entry is not None and (bool(entry["rejected"]) or
                                      all((item_id, s["index"]) in self.steps for s in entry["plan"]))

    def spent(self, done: Completion) -> None:
        self.requests += 1
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens


async def agentwrite_all(engine: Engine, items: list[dict], settings: schema.AgentWrite, *, seed,
                         sampling: Sampling | None = None, adapter: str | None = None,
                         checkpoint: Path | None = None) -> tuple[list[dict], dict]:
    """(rows sorted by id, stats) for items {id, instruction, language}, by the `agentwrite`
    settings (conf/agentwrite/default.yaml). Request seeds derive from
    (seed, item id, step), step 0 being the plan, so a resumed run asks what an
    uninterrupted one would have."""
    started = time.time()
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids), "item ids must be unique"
    progress = _Progress(checkpoint)
    base = sampling or Sampling()
    plan_sampling, write_sampling = phase_sampling(base, settings.plan), phase_sampling(base, settings.write)
    bound = settings.max_items_in_flight
    gate = asyncio.Semaphore(bound) if bound else None

    async def call(item: dict, step: int, messages: list[dict], how: Sampling, prefix: str = "") -> Completion:
        request = Request(messages, prefix=prefix, adapter=adapter,
                          seed=stable_seed(seed, "agentwrite", item["id"], step), key=str(item["id"]))
        done = await engine.complete(request, how)
        progress.spent(done)
        return done

    async def plan_of(item: dict) -> dict:
        prefix = plan_label(item["language"]) if settings.plan.prefill else ""
        done = await call(item, 0, plan_request(item["instruction"], item["language"], min_words=settings.min_words,
                                                max_words=settings.max_words), plan_sampling, prefix)
        text = prefix + done.text
        plan = parse_plan(text, item["language"], max_steps=settings.max_steps)
        missing = sum(s.words is None for s in plan.steps)
        plan = plan.with_default_words(settings.default_step_words)
        return {"kind": "plan", "id": item["id"], "rejected": plan.rejected,
                "plan": [] if plan.rejected else [{"index": s.index, "point": s.point, "planned_words": s.words}
                                                  for s in plan.steps],
                "defaulted": 0 if plan.rejected else missing, "text": text}

    async def write(item: dict) -> None:
        if item["id"] not in progress.plans:
            progress.add(await plan_of(item))
        entry = progress.plans[item["id"]]
        if entry["rejected"]:
            return
        plan = Plan(tuple(PlanStep(s["index"], s["point"], s["planned_words"]) for s in entry["plan"]))
        paragraphs: list[str] = []
        for step in plan.steps:
            if (item["id"], step.index) not in progress.steps:
                messages = write_request(item["instruction"], plan, "\n\n".join(p for p in paragraphs if p), step,
                                         item["language"], max_written_chars=settings.max_written_chars)
                done = await call(item, step.index, messages, write_sampling)
                text = done.text.strip()
                progress.add({"kind": "step", "id": item["id"], "index": step.index, "text": text,
                              "words": count_words(text), "planned_words": step.words,
                              "finish_reason": done.finish_reason})
            paragraphs.append(progress.steps[(item["id"], step.index)]["text"])

    async def gated(item: dict) -> None:
        if gate is None:
            await write(item)
        else:
            async with gate:
                await write(item)
        if item["id"] not in finished:
            stage_progress.advance(item["id"])  # the loop's progress display (a no-op elsewhere)

    finished = {item["id"] for item in items if progress.finished(item["id"])}
    stage_progress.expect(len(items), done=len(finished))
    tasks = [asyncio.ensure_future(gated(item)) for item in items]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # a failed call ends the run: stop the other chains too
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    rows, empty_responses = [], 0
    for item in items:
        row = _row(item, progress)
        if row is not None and row["words"]:
            rows.append(row)
        elif row is not None:
            empty_responses += 1
    plans = [progress.plans[i] for i in ids]
    wanted = set(ids)
    steps = [s for key, s in progress.steps.items() if key[0] in wanted]
    rejected = Counter(p["rejected"] for p in plans if p["rejected"])
    stats = {
        "items": len(items), "planned": sum(not p["rejected"] for p in plans),
        "plans_rejected": {reason: rejected.get(reason, 0) for reason in REJECT_REASONS},
        "defaulted_word_counts": sum(p["defaulted"] for p in plans),
        "steps_written": sum(bool(s["text"]) for s in steps), "empty_steps": sum(not s["text"] for s in steps),
        "truncated_steps": sum(s["finish_reason"] == "length" for s in steps),
        "rows": len(rows), "empty_responses": empty_responses,
        "resumed_plans": progress.resumed_plans, "resumed_steps": progress.resumed_steps,
        "requests": progress.requests, "steps_this_run": progress.new_steps,
        "tokens": {"prompt": progress.prompt_tokens, "completion": progress.completion_tokens},
        "seconds": round(time.time() - started, 2),
    }
    stats["paragraphs_per_second"] = round(progress.new_steps / stats["seconds"], 3) if stats["seconds"] else None
    return sorted(rows, key=lambda r: r["id"]), stats


def plan_label(language: str) -> str:
    """The first plan line's label in the requested format: 'Paragraph 1 - Main point:'."""
    line = format_step(PlanStep(1, "", None), language)
    return line.rstrip()


def pending(items: list[dict], checkpoint: Path) -> int:
    """How many items the checkpoint does not finish (no plan yet, or a plan step unwritten)."""
    progress = _Progress(checkpoint)
    return sum(not progress.finished(item["id"]) for item in items)


def _row(item: dict, progress: _Progress) -> dict | None:
    """The item's output row, or None when its plan was rejected."""
    entry = progress.plans[item["id"]]
    if entry["rejected"]:
        return None
    steps = [progress.steps[(item["id"], s["index"])] for s in entry["plan"]]
    response = "\n\n".join(s["text"] for s in steps if s["text"])
    return {"id": item["id"], "instruction": item["instruction"], "language": item["language"],
            "plan": entry["plan"],
            "paragraphs": [{"index": s["index"], "planned_words": s["planned_words"], "words": s["words"],
                            "finish_reason": s["finish_reason"]} for s in steps],
            "response": response, "words": count_words(response),
            "planned_words": sum(s["planned_words"] for s in entry["plan"])}


def last_finish(row: dict) -> str | None:
    """How a row's response ends: as its last written paragraph did (None when none was)."""
    written = [p for p in row["paragraphs"] if p["words"]]
    return written[-1]["finish_reason"] if written else None


def kept_signals(rows: list[dict]) -> dict:
    """Judge-free quality of rows' responses (core/signals.set_summary): each response ends
    as its last written paragraph did (one cut at max_tokens: cap)."""
    return signals.set_summary([r["response"] for r in rows], [r["language"] for r in rows],
                               [last_finish(r) for r in rows])


# --- how well the writing followed the plan ---------------------------------------------

def plan_vs_actual(rows: list[dict]) -> dict:
    """Planned against written words, per paragraph and per response. `ratio` is total
    written / total planned; `within_20pct` the share of paragraphs within 20% of plan."""
    paras = [(p["planned_words"], p["words"]) for r in rows for p in r["paragraphs"]]
    resps = [(r["planned_words"], r["words"]) for r in rows]

    def summary(pairs: list[tuple[int, int]]) -> dict:
        planned, actual = sum(p for p, _ in pairs), sum(a for _, a in pairs)
        return {"n": len(pairs),
                "mean_planned": round(planned / len(pairs), 1) if pairs else None,
                "mean_actual": round(actual / len(pairs), 1) if pairs else None,
                "ratio": round(actual / planned, 3) if planned else None,
                "median_ratio": round(statistics.median(a / p for p, a in pairs if p), 3)
                if any(p for p, _ in pairs) else None}

    out = {"paragraphs": summary(paras), "responses": summary(resps)}
    near = [abs(a - p) <= 0.2 * p for p, a in paras if p]
    out["paragraphs"]["within_20pct"] = round(sum(near) / len(near), 3) if near else None
    return out


def plot_plan_vs_actual(rows: list[dict], out_png: Path) -> Path:
    """Scatter of planned against written words, one point per paragraph, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    for language in sorted({r["language"] for r in rows}):
        pairs = [(p["planned_words"], p["words"]) for r in rows if r["language"] == language for p in r["paragraphs"]]
        ax.scatter([p for p, _ in pairs], [a for _, a in pairs], s=12, alpha=0.6, label=f"{language} ({len(pairs)})")
    top = max([1] + [max(p["planned_words"], p["words"]) for r in rows for p in r["paragraphs"]])
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="written = planned")
    ax.set_xlabel("planned words per paragraph")
    ax.set_ylabel("written words per paragraph")
    ax.set_title("AgentWrite: plan vs. actual")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


# --- which responses are kept as training data ------------------------------------------

def keep_rows(rows: list[dict], keep: schema.AgentFilter, check=None) -> tuple[list[dict], dict]:
    """(rows within [min_words, max_words] that pass `check` (a QualityCheck, when the
    filter asks for it), {reason: rows dropped}), by the agentwrite.filter settings."""
    kept, dropped = [], Counter()
    low, high = keep.min_words, keep.max_words
    for row in rows:
        if row["words"] < low:
            dropped["too_short"] += 1
        elif high is not None and row["words"] > high:
            dropped["too_long"] += 1
        elif keep.quality and check is not None and not check(row["response"], row["language"],
                                                              cut=signals.is_cut(last_finish(row))):
            dropped["quality"] += 1
        else:
            kept.append(row)
    return kept, dict(dropped)

