"""The experiment trackers behind `tracking`: TensorBoard, MLflow, Weights & Biases. Each
takes scalars with a step (the iteration), a few sample rows as a table, and says how a
TRL trainer in another process reports to it (`report_to` plus environment variables).

Offline by default: TensorBoard event files and an MLflow SQLite store live under the run
folder (`<run>/tracking/`), W&B runs in offline mode. A remote MLflow server or W&B online
are the user's choice, through their own environment variables (MLFLOW_TRACKING_URI,
WANDB_API_KEY, ...) or `tracking.wandb.mode=online`; no URL, key or token is written to
the run folder. Each library is imported only when its backend is selected.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


class TensorBoard:
    """Event files under `<run>/tracking/tensorboard/` (`tensorboard --logdir` that folder, or
    a sweep's folder to see its jobs side by side); a resumed run appends to the same folder.
    Training curves: one sub-run per iteration and role, `train/iter_<k>/<role>`."""

    name = "tensorboard"

    def __init__(self, settings, root: Path, state: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(settings.dir) if settings.dir else root / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=30)
        state.setdefault("logdir", str(self.dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        def cell(v):
            return str(v).replace("|", "\\|").replace("\n", " ")[:400]

        text = "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                         + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])
        self.writer.add_text(tag, text, step)
        self.writer.flush()

    def train_report(self, k: int, role: str) -> tuple[str, dict]:
        return "tensorboard", {"TENSORBOARD_LOGGING_DIR": str(self.dir / "train" / f"iter_{k}" / role)}

    def close(self, ok: bool) -> None:
        self.writer.close()


class MLflow:
    """One MLflow run per run of ours, in experiment `tracking.mlflow.experiment` (a sweep:
    the sweep's name, so its jobs sit side by side); each iteration's training of each role
    is a child run (`iter_<k>/<role>`) that TRL's MLflowCallback fills with its per-step
    loss. The store: MLFLOW_TRACKING_URI when set, else SQLite under the run folder."""

    name = "mlflow"

    def __init__(self, settings, root: Path, state: dict, run_name: str, group: str | None, params: dict):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage pings
        from mlflow import MlflowClient

        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"
        self.local = "MLFLOW_TRACKING_URI" not in os.environ
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = group or settings.experiment
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            artifacts = (root / "mlflow-artifacts").resolve().as_uri() if self.local else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        self.state = state
        if state.get("run_id"):  # a resumed run continues its MLflow run
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={"selflengthen.run": run_name, **({"sweep": group} if group else {})})
            self.run_id = state["run_id"] = run.info.run_id
            flat = {k: str(v)[:500] for k, v in params.items()}
            items = list(flat.items())
            from mlflow.entities import Param

            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
        state["experiment_id"] = self.experiment_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        data = [dict(zip(columns, row)) for row in rows]
        self.client.log_text(self.run_id, json.dumps(data, ensure_ascii=False, indent=1),
                             f"samples/{tag.replace('/', '_')}_iter_{step}.json")

    def train_report(self, k: int, role: str) -> tuple[str, dict]:
        children = self.state.setdefault("train_runs", {})
        key = f"iter_{k}/{role}"
        if key not in children:
            children[key] = self.client.create_run(self.experiment_id, run_name=key, tags={
                "mlflow.parentRunId": self.run_id, "selflengthen.iteration": str(k), "selflengthen.role": role,
            }).info.run_id
        env = {"MLFLOW_RUN_ID": children[key], "MLFLOW_DISABLE_TELEMETRY": os.environ["MLFLOW_DISABLE_TELEMETRY"]}
        if self.local:  # a user's own server URI stays in the environment, never in our files
            env["MLFLOW_TRACKING_URI"] = self.uri
        return "mlflow", env

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


class Wandb:
    """One W&B run per run of ours (its id kept in the run folder; a resumed run continues
    it), offline unless `tracking.wandb.mode=online` (the key from WANDB_API_KEY); iteration
    is the x axis. Each training is its own W&B run in the group named after our run (TRL's
    WandbCallback starts a run per process), offline like the main one."""

    name = "wandb"

    def __init__(self, settings, root: Path, state: dict, run_name: str, group: str | None, params: dict):
        import wandb

        self.wandb = wandb
        self.dir = root / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = settings.mode
        self.project = settings.project
        self.group = group or run_name
        state.setdefault("id", uuid.uuid4().hex[:12])
        self.run = wandb.init(project=self.project, entity=settings.entity, name=run_name, id=state["id"],
                              group=self.group, resume="allow", mode=self.mode, dir=str(self.dir), config=params,
                              settings=wandb.Settings(silent=True, console="off"))
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "iteration": step})

    def table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        self.run.log({tag: self.wandb.Table(columns=columns, data=[[str(v) for v in r] for r in rows]),
                      "iteration": step})

    def train_report(self, k: int, role: str) -> tuple[str, dict]:
        return "wandb", {"WANDB_MODE": self.mode, "WANDB_DIR": str(self.dir), "WANDB_PROJECT": self.project,
                         "WANDB_RUN_GROUP": self.group, "WANDB_NAME": f"{self.group}/iter_{k}/{role}",
                         "WANDB_SILENT": "true", "WANDB_LOG_MODEL": "false"}

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
