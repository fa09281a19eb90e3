"""Experiment tracking: one layer fanning out to the trackers selected in the `tracking`
config group (`tracking=tensorboard`, `tracking=[tensorboard,mlflow]`; `none` by default).

Everything logged is read back from what the run already writes, never recomputed: per
stage, the numbers of `manifests/<stage>.json` and the stage's entry of
`manifests/engine_usage.json` (requests, tokens, tokens/s); per iteration, `metrics.json`
(counts, acceptance and quality pass rates, word-length statistics, training loss, tokens,
seconds) and each benchmark's evaluation headline; all with the iteration as the step.
Beside each length, its judge-free quality signals (core/signals.py): per iteration
`iteration/signals/{initial,extended}/<signal>` (e.g. `.../extended/distinct_3`, and
`<signal>_seg<i>` per segment of the texts), per evaluation `eval/<benchmark>/signals/<signal>`. The
training loss per step comes from TRL itself (`report_to`, see `train_report`). A few
sample rows (instruction, initial, extended) go to each tracker's table or text.

`<run>/tracking/tracking.json` keeps each tracker's run id, so a resumed run continues the
same tracker run, and which iterations were logged, so nothing is logged twice.
"""
from __future__ import annotations

import logging
from pathlib import Path

from selflengthen.config import schema
from selflengthen.store import artifacts

log = logging.getLogger("selflengthen")
BACKENDS = ("tensorboard", "mlflow", "wandb")
SAMPLE_ROWS = 3


def selected(tracking: schema.Tracking) -> list[str]:
    """The trackers the config selects (the keys of `tracking` that name one)."""
    return [b for b in BACKENDS if getattr(tracking, b) is not None]


def flatten(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a/b/c": value} (lists, strings, None dropped)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    return out


def stage_metrics(it: artifacts.IterationPaths, stage: str) -> dict[str, float]:
    """`stage/<stage>/...`: the stage manifest's counts and seconds, and its engine usage."""
    out: dict[str, float] = {}
    path = it.stage_manifest(stage)
    if path.exists():
        manifest = artifacts.read_json(path)
        out.update(flatten({"counts": manifest.get("counts"), "acceptance": manifest.get("acceptance"),
                            "seconds": manifest.get("seconds")}, f"stage/{stage}/"))
        if stage == "train":
            out.update(flatten({role: {k: info.get(k) for k in ("examples", "steps", "train_loss", "seconds")}
                                for role, info in (manifest.get("roles") or {}).items()}, "stage/train/"))
    usage_path = it.stage_manifest("engine_usage")
    usage = (artifacts.read_json(usage_path) if usage_path.exists() else {}).get(stage) or {}
    out.update(flatten({k: usage.get(k) for k in ("requests", "prompt_tokens", "completion_tokens", "seconds",
                                                   "tokens_per_second")}, f"stage/{stage}/engine/"))
    return out


def iteration_metrics(it: artifacts.IterationPaths) -> dict[str, float]:
    """`iteration/...`: the numbers of metrics.json (length curve points, quality signals of
    the kept texts, rates, loss, tokens)."""
    m = artifacts.read_json(it.metrics)
    keep = {k: m.get(k) for k in ("counts", "words", "signals", "acceptance", "training", "tokens", "seconds")}
    return flatten(keep, "iteration/")


def sample_rows(it: artifacts.IterationPaths, n: int = SAMPLE_ROWS) -> list[list]:
    """A few accepted extensions: instruction, initial response, extended response, words."""
    if not it.extended.exists():
        return []
    rows = artifacts.read_jsonl(it.extended)[:n]
    return [[r.get("instruction", ""), r.get("initial", ""), r.get("response", ""), r.get("initial_words"),
             r.get("words")] for r in rows]


class Tracker:
    """The selected trackers behind one interface; opened at the first thing to log (a run
    with nothing left to do touches no tracker), closed at the end of the run."""

    def __init__(self, tracking: schema.Tracking, run_name: str, iterations_dir: str, params: dict, run_root: Path):
        """`params`: the run's settings as plain data, logged as the tracker runs' parameters."""
        self.tracking, self.params, self.iterations_dir = tracking, params, iterations_dir
        self.names = selected(tracking)
        self.root = Path(run_root) / "tracking"
        self.state_path = self.root / "tracking.json"
        self.group = tracking.group or None
        self.run_name = run_name if not self.group else f"{self.group}/{run_name}"
        self.backends: list = []
        self.state: dict = {}
        self.opened = False

    @property
    def enabled(self) -> bool:
        return bool(self.names)

    def open(self) -> None:
        if self.opened or not self.names:
            return
        self.opened = True
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = artifacts.read_json(self.state_path) if self.state_path.exists() else {}
        from selflengthen.tracking import backends  # deferred: tensorboard, mlflow, wandb only when a tracker is on

        params = flatten_params(self.params)
        # a sweep's jobs share one MLflow store (in the sweep's folder) and one experiment
        shared = Path(self.iterations_dir) / "tracking" if self.group else self.root
        for name in self.names:
            sub = getattr(self.tracking, name)
            state = self.state.setdefault(name, {})
            if name == "tensorboard":
                self.backends.append(backends.TensorBoard(sub, self.root, state))
            elif name == "mlflow":
                shared.mkdir(parents=True, exist_ok=True)
                self.backends.append(backends.MLflow(sub, shared, state, self.run_name, self.group, params))
            else:
                self.backends.append(backends.Wandb(sub, self.root, state, self.run_name, self.group, params))
        self.save()
        log.info("tracking to %s (under %s)", ", ".join(self.names), self.root)

    def save(self) -> None:
        artifacts.write_json(self.state_path, self.state)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not metrics or not self.names:
            return
        self.open()
        for backend in self.backends:
            backend.log(metrics, step)

    def table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        if not rows or not self.names:
            return
        self.open()
        for backend in self.backends:
            backend.table(tag, columns, rows, step)

    def log_stage(self, it: artifacts.IterationPaths, stage: str) -> None:
        self.log(stage_metrics(it, stage), it.k)
        if stage == "extend":
            self.table("samples/extend", ["instruction", "initial", "extended", "initial words", "words"],
                       sample_rows(it), it.k)

    def log_finished(self, paths: artifacts.RunPaths, evals: dict[int, dict]) -> None:
        """Every finished iteration and evaluation not logged before (at most once each)."""
        if not self.names:
            return
        self.open()
        done = self.state.setdefault("logged", {"iterations": [], "evals": []})
        for it in paths.iterations():
            if it.k not in done["iterations"] and it.manifest.exists() and it.metrics.exists():
                self.log(iteration_metrics(it), it.k)
                done["iterations"].append(it.k)
        for k, per in sorted(evals.items()):
            for bench, head in per.items():
                key = f"{k}/{bench}"
                if key not in done["evals"]:
                    self.log(flatten(head, f"eval/{bench}/"), k)
                    done["evals"].append(key)
        self.save()

    def train_report(self, k: int, role: str) -> dict:
        """What a training task needs to report to the trackers through TRL's `report_to`:
        {"report_to": [...], "env": {...}}; empty when nothing is tracked."""
        if not self.names:
            return {}
        self.open()
        report_to, env = [], {}
        for backend in self.backends:
            name, extra = backend.train_report(k, role)
            report_to.append(name)
            env.update(extra)
        self.save()
        return {"report_to": report_to, "env": env}

    def close(self, ok: bool) -> None:
        if not self.opened:
            return
        for backend in self.backends:
            try:
                backend.close(ok)
            except Exception as err:  # noqa: BLE001 - closing a tracker must not hide the run's own error
                log.warning("closing the %s tracker failed: %s", backend.name, err)
        self.save()


def flatten_params(cfg: dict, prefix: str = "") -> dict[str, object]:
    """The resolved config as flat parameters (a.b.c -> value) for the trackers' run config."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        if key in ("hydra", "tracking"):
            continue
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
