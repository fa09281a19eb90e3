"""The one contract every stage of an iteration keeps.

A stage is a `Stage`: its name, the progress unit it counts in, which slice of the typed
settings it computes with, and a body that reads its inputs from the iteration folder,
writes its data files and returns an `Output` (counts, the files written, the checkpoints
it leaves behind). `run_stage` owns everything else, the same way for every stage:

  - skip when done, under the product's one step contract (store/steps.py): the stage's
    manifest records what made it (`made_with`: its settings slice and what reaches it
    beside the slice through `Inputs`: seed, languages, the model, the adapters, the loop's
    sampling and quality rules); the same: skipped; other: refused in one line naming the
    changed keys, or redone with `redo=<stage>` (a manifest from before made_with was
    recorded keeps the older rule: its slice hash is compared, none at all counts as done);
  - progress, the status file and the trackers (observe.stage), and the wall time;
  - the engine's usage over the stage (manifests/engine_usage.json);
  - the manifest, written last (its presence means the stage is complete), then the
    removal of the stage's checkpoints, whose rows are in its data files by then.

Adding a stage is one module exporting a `Stage` and one line in the loop's list
(pipeline/stages/__init__.py's STAGES).
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from selflengthen.config import schema
from selflengthen.core.text import QualityRules
from selflengthen.engines import Engine, Sampling, merge_usage, usage_delta
from selflengthen.pipeline import observe
from selflengthen.store import artifacts, steps

log = logging.getLogger("selflengthen")


@dataclass(frozen=True)
class Owner:
    """Whose steps the stages are, for the step contract's refusal: the verb, the override
    that writes elsewhere, the verb's step they belong to (finalize's `collect` runs augment
    and generate; None: each stage is a step of its own), and the steps `redo=` lets redo."""
    verb: str = "run"
    rename: str = "run.name=NEW"
    step: str | None = None
    redo: frozenset = frozenset()


@dataclass(frozen=True)
class Inputs:
    """What the loop hands every stage of iteration `paths.k`: where it reads and writes,
    the run's seed and languages, the model and the previous iteration's adapters (none in
    iteration 1), and while the engine is up, the engine, the loop's sampling, the quality
    rules and the instruction pool augment draws from."""
    paths: artifacts.IterationPaths
    seed: int
    languages: tuple[str, ...]
    model_path: str
    adapters: dict[str, str]
    engine: Engine | None = None
    sampling: Sampling | None = None
    rules: dict[str, QualityRules] = field(default_factory=dict)
    pool: dict[str, list[str]] = field(default_factory=dict)
    owner: Owner = Owner()

    def adapter(self, role: str) -> str | None:
        """The adapter a request of `role` is served with: none in iteration 1."""
        return role if self.adapters else None


@dataclass(frozen=True)
class Output:
    """What a stage's body returns: the manifest's counts and extra fields, the data files
    it wrote, and the checkpoints (partial/<name>.jsonl) to remove once the manifest is down."""
    counts: dict
    outputs: list[Path]
    extra: dict = field(default_factory=dict)
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One step of an iteration, describing itself: its name (its manifest is
    manifests/<name>.json), the unit its progress counts in, `settings` (the typed slice the
    body computes with, hashed into the manifest), `body(slice, inputs)` (returns an Output,
    sync or async), whether it needs the engine up (`engine`: the loop then runs it inside
    an engine's life, with `inputs.engine` set; a stage that generates and then trains is
    one too), and what it writes (`writes`: paths under the iteration folder)."""
    name: str
    unit: str
    settings: Callable[[schema.Config], Any]
    body: Callable[[Any, Inputs], Output | Awaitable[Output]]
    engine: bool = False
    writes: tuple[str, ...] = ()


def settings_hash(chosen: Any) -> str:
    """A stable digest of a stage's settings slice (typed groups, dicts of them, or plain values):
    what a manifest written before made_with was recorded holds, compared for it."""
    def plain(value):
        if isinstance(value, BaseModel):
            return value.model_dump()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return artifacts.config_hash(plain(chosen))


def inputs_made_with(inputs: Inputs) -> dict:
    """What reaches a stage beside its settings slice, as plain values: the seed, the
    languages, the model (an embedded model's recipe key and weights digest, else its path),
    the adapters (relative to the run folder), the loop's sampling and quality rules."""
    run_root = inputs.paths.root.parent

    def where(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(run_root)) if p.is_absolute() and p.is_relative_to(run_root) else path

    return {"seed": inputs.seed, "languages": list(inputs.languages), "model": model_identity(inputs.model_path),
            "adapters": {role: where(path) for role, path in sorted(inputs.adapters.items())},
            "sampling": steps.plain(inputs.sampling), "rules": steps.plain(inputs.rules)}


def model_identity(model_path: str):
    """An embedded model's recipe key and weights digest (the same model wherever the cache
    is), else the model's path or hub id."""
    build = artifacts.model_build(model_path) if model_path else None
    if not build:
        return model_path
    return {"key": build.get("key"), "weights": (build.get("fingerprint") or {}).get("weights_sha256")}


def step_of(stage: Stage, chosen: Any, inputs: Inputs) -> steps.Step:
    """The stage of iteration inputs.paths.k as a step of the contract (store/steps.py)."""
    it, owner = inputs.paths, inputs.owner
    return steps.Step(owner.verb, owner.step or stage.name, it.root, it.stage_manifest(stage.name),
                      {"settings": steps.plain(chosen), "inputs": inputs_made_with(inputs)}, owner.rename,
                      legacy={"settings_hash": settings_hash(chosen)})


def is_done(stage: Stage, settings: schema.Config, inputs: Inputs) -> bool:
    """The stage's manifest records what is asked now; one made otherwise is refused in one
    line naming the changed keys (or, with redo= naming it or a step before it, redone)."""
    owner = inputs.owner
    redo = stage.name in owner.redo or (owner.step is not None and owner.step in owner.redo)
    return steps.reusable(step_of(stage, stage.settings(settings), inputs), redo=redo)


async def run_stage(stage: Stage, settings: schema.Config, inputs: Inputs) -> dict | None:
    """Run `stage` for iteration inputs.paths.k unless it is done; its manifest's counts, or
    None when it was done already."""
    it, chosen = inputs.paths, stage.settings(settings)
    if is_done(stage, settings, inputs):
        return None
    made = step_of(stage, chosen, inputs).fields()
    digest = made["settings_hash"]
    log.info("iteration %d: %s", it.k, stage.name)
    engine = inputs.engine
    started = time.time()
    with observe.stage(it.k, stage.name, engine, unit=stage.unit):  # progress, status.json and the trackers
        before = usage_snapshot(engine)
        out = stage.body(chosen, inputs)
        if inspect.isawaitable(out):
            out = await out
        if engine is not None:
            record_engine_usage(it, stage.name, before, usage_snapshot(engine), time.time() - started)
        artifacts.write_stage_manifest(it, stage.name, started=started, config_digest=digest, counts=out.counts,
                                       outputs=out.outputs, extra={**made, **out.extra})
    for name in out.checkpoints:  # their rows are in the stage's data files now
        it.checkpoint(name).unlink(missing_ok=True)
    return out.counts


def usage_snapshot(engine) -> list[dict]:
    """What each replica has served so far (one entry for an engine without replicas)."""
    if engine is None:
        return []
    return engine.replica_usage() if hasattr(engine, "replica_usage") else [engine.usage()]


def record_engine_usage(it: artifacts.IterationPaths, stage: str, before: list[dict], after: list[dict],
                        seconds: float) -> None:
    """manifests/engine_usage.json: which adapter (and which weights) served each stage,
    with its requests, tokens, wall time and generated tokens per second."""
    path = it.stage_manifest("engine_usage")
    usage = artifacts.read_json(path) if path.exists() else {}
    per_replica = [usage_delta(b, a) for b, a in zip(before, after)]
    served = merge_usage(per_replica)
    generated = sum(info.get("completion_tokens", 0) for info in served.values())
    usage[stage] = {
        "adapters": served,
        "requests": sum(info.get("requests", 0) for info in served.values()),
        "prompt_tokens": sum(info.get("prompt_tokens", 0) for info in served.values()),
        "completion_tokens": generated, "seconds": round(seconds, 2),
        "tokens_per_second": round(generated / seconds, 1) if seconds > 0 else None,
        "replicas": len(after),
        "per_replica": [{"requests": sum(i["requests"] for i in part.values()),
                         "completion_tokens": sum(i.get("completion_tokens", 0) for i in part.values())}
                        for part in per_replica],
    }
    artifacts.write_json(path, usage)
