"""Watching a run as it goes: ties the stage progress (core/progress.py), the experiment
trackers (tracking/) and the live status file (store/status.py) to the loop, so loop.py needs
only `watching(...)` around the run, `stage(...)` around each stage and `log_finished`
after each iteration.

The watcher of the run in progress is a context variable (set by `watching`, read by the
rest), so the stages and the loop's helpers need no extra argument; with no watcher
(other verbs, unit tests) every function here does nothing.
"""
from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from pathlib import Path

from selflengthen.config import schema
from selflengthen.core import progress, stopping
from selflengthen.evaluation import in_run
from selflengthen.store import artifacts
from selflengthen.store.status import StatusWriter
from selflengthen.tracking import Tracker

log = logging.getLogger("selflengthen")


class Watcher:
    """The run's tracker, status thread and the stage now running."""

    def __init__(self, settings: schema.Config, run_root: Path):
        self.run_name, self.progress = settings.run.name, settings.progress
        self.paths = artifacts.RunPaths(Path(run_root))
        self.tracker = Tracker(settings.tracking, settings.run.name, settings.paths.iterations_dir,
                               settings.model_dump(mode="json"), self.paths.root)
        self.iteration: int | None = None
        self.stage: progress.StageProgress | None = None
        self.engine = None
        self.tokens_before = 0
        self.status = StatusWriter(self.paths.root, self.snapshot, settings.status.interval_s,
                                   settings.status.stale_after_s, on_tick=self.tick)

    def snapshot(self) -> dict:
        out = {"run": self.run_name, "iteration": self.iteration, "stage": None}
        if self.stage is not None:
            out.update(self.stage.snapshot())
        return out

    def tick(self) -> None:
        """Every status interval: fresh token and step counts for the stage, then its line."""
        stage = self.stage
        if stage is None:
            return
        if self.engine is not None:
            stage.set(tokens=max(0, generated_tokens(self.engine) - self.tokens_before))
        elif stage.name == "train" and self.iteration is not None:
            stage.set(**training_progress(self.paths.iteration(self.iteration)))
        stage.tick()


def generated_tokens(engine) -> int:
    try:
        return sum(info.get("completion_tokens", 0) for info in engine.usage().values())
    except Exception:  # noqa: BLE001 - a usage read racing the engine's own updates: try next tick
        return 0


def training_progress(it: artifacts.IterationPaths) -> dict:
    """Steps done / total and the last loss of both trainers (finished ones from their
    manifests, running ones from the progress file their callback writes)."""
    done = total = 0
    loss = None
    for role in artifacts.ROLES:
        manifest = it.stage_manifest(f"train_{role}")
        live = it.adapter(role).with_name(it.adapter(role).name + ".trainer") / "progress.json"
        try:
            info = artifacts.read_json(manifest) if manifest.exists() else artifacts.read_json(live)
        except (OSError, ValueError):
            continue
        done += int(info.get("steps", info.get("step", 0)) or 0)
        total += int(info.get("max_steps", info.get("steps", 0)) or 0)
        loss = info.get("loss", info.get("loss_last", loss))
    return {"done": done, "total": total or None, **({"loss": loss} if loss is not None else {})}


_WATCHER: contextvars.ContextVar[Watcher | None] = contextvars.ContextVar("selflengthen_watcher", default=None)


@contextmanager
def watching(settings: schema.Config, run_root: Path):
    """Around the whole run: status.json from start to end, trackers closed at the end
    (an MLflow run marked FAILED when the run raised)."""
    watcher = Watcher(settings, run_root)
    token = _WATCHER.set(watcher)
    watcher.status.start()

    def forced() -> None:  # a stop the handler never took (core/stopping): no "running" left behind
        watcher.status.stop("stopped", wait=False)

    stopping.on_forced_exit(forced)
    ok = False
    try:
        yield watcher
        ok = True
    finally:
        stopping.off_forced_exit(forced)
        _WATCHER.reset(token)
        watcher.stage = None
        watcher.status.stop("finished" if ok else "failed")
        watcher.tracker.close(ok)


@contextmanager
def stage(k: int, name: str, engine=None, unit: str = "it"):
    """Around one stage of iteration `k`: its progress reporter (for the chains, counting in
    `unit`), the status file's stage, and the stage's numbers to the trackers once it is complete."""
    watcher = _WATCHER.get()
    if watcher is None:
        yield
        return
    reporter = progress.StageProgress(name, unit=unit, enabled=watcher.progress,
                                      label=f"iter {k} {name}")
    watcher.iteration, watcher.engine, watcher.stage = k, engine, reporter
    watcher.tokens_before = generated_tokens(engine) if engine is not None else 0
    token = progress.activate(reporter)
    try:
        yield reporter
    finally:
        progress.deactivate(token)
        watcher.tick()
        reporter.close()
        watcher.stage = watcher.engine = None
    it = watcher.paths.iteration(k)
    if it.stage_done(name):  # a stage of the loop's list, complete (its manifest is written)
        watcher.tracker.log_stage(it, name)


def log_finished(paths: artifacts.RunPaths) -> None:
    """Every finished iteration (and evaluation) not yet sent to the trackers."""
    watcher = _WATCHER.get()
    if watcher is not None and watcher.tracker.enabled:
        watcher.tracker.log_finished(paths, in_run.load(paths))


def train_report(k: int, role: str) -> dict:
    """For a training task's config: TRL's `report_to` and the trackers' environment."""
    watcher = _WATCHER.get()
    return watcher.tracker.train_report(k, role) if watcher is not None else {}
