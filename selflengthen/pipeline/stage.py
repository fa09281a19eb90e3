"""The one contract every stage of an iteration keeps.

A stage is a `Stage`: its name, the progress unit it counts in, which slice of the typed
settings it computes with, and a body that reads its inputs from the iteration folder,
writes its data files and returns an `Output` (counts, the files written, the checkpoints
it leaves behind). `run_stage` owns everything else, the same way for every stage:

  - skip when done: the stage's manifest exists and records the same settings hash (a
    manifest made with other settings is refused with one line; one written before the
    hash was recorded counts as done, so older runs resume);
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
from selflengthen.core.errors import UserError
from selflengthen.core.text import QualityRules
from selflengthen.engines import Engine, Sampling, merge_usage, usage_delta
from selflengthen.pipeline import observe
from selflengthen.store import artifacts

log = logging.getLogger("selflengthen")


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
    """A stable digest of a stage's settings slice (typed groups, dicts of them, or plain values)."""
    def plain(value):
        if isinstance(value, BaseModel):
            return value.model_dump()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return artifacts.config_hash(plain(chosen))


def is_done(it: artifacts.IterationPaths, stage: str, digest: str) -> bool:
    """The stage's manifest exists; one that records other settings is a UserError."""
    if not it.stage_done(stage):
        return False
    recorded = artifacts.read_json(it.stage_manifest(stage)).get("settings_hash")
    if recorded is not None and recorded != digest:
        raise UserError(f"iteration {it.k}'s {stage} stage in {it.root} was made with other settings (hash {recorded}, "
                        f"now {digest}); resume with the settings the run was started with, or start another run "
                        "with run.name=NEW_NAME")
    return True


async def run_stage(stage: Stage, settings: schema.Config, inputs: Inputs) -> dict | None:
    """Run `stage` for iteration inputs.paths.k unless it is done; its manifest's counts, or
    None when it was done already."""
    it, chosen = inputs.paths, stage.settings(settings)
    digest = settings_hash(chosen)
    if is_done(it, stage.name, digest):
        return None
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
                                       outputs=out.outputs, extra={"settings_hash": digest, **out.extra})
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
