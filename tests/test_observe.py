"""Watching a run: the per-stage progress (bounded without a terminal), the live
status.json and `inspect`'s view of it (running, stale), and the experiment trackers read
back with their own readers (TensorBoard's EventAccumulator, MLflow's client), including a
run that is killed and resumed into the same tracker run."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selflengthen import progress
from selflengthen.progress import StageProgress
from selflengthen.status import StatusWriter, describe, read_status
from selflengthen.tracking import flatten
from tests.conftest import REPO, run_cli


# --- progress ---------------------------------------------------------------------------

def test_without_a_terminal_a_stage_of_200_items_prints_at_most_11_lines():
    out = io.StringIO()
    reporter = StageProgress("generate", unit="sample", stream=out, tty=False, label="iter 1 generate")
    token = progress.activate(reporter)
    try:
        progress.expect(200)
        for i in range(200):
            if i % 7 == 0:
                progress.retry(i)
            progress.advance(i)
    finally:
        progress.deactivate(token)
    reporter.close()
    lines = out.getvalue().splitlines()
    assert 1 <= len(lines) <= 11, lines
    assert lines[-1].startswith("iter 1 generate: 100% 200/200")
    assert "\r" not in out.getvalue()


def test_a_slow_stage_prints_a_line_per_minute_and_resumed_items_count_as_done():
    out = io.StringIO()
    reporter = StageProgress("extend", stream=out, tty=False, line_every_s=0.0)
    reporter.expect(1000, done=40)
    for _ in range(3):
        reporter.advance()
    assert len(out.getvalue().splitlines()) == 4  # the resumed 4% and one per "minute" (0 s here)
    assert reporter.snapshot()["done"] == 43 and reporter.eta_s() is not None


def test_progress_false_prints_nothing_and_a_terminal_redraws_in_place():
    quiet = io.StringIO()
    reporter = StageProgress("augment", stream=quiet, tty=False, enabled=False)
    reporter.expect(10)
    for _ in range(10):
        reporter.advance(accepted=1)
    reporter.close()
    assert quiet.getvalue() == "" and reporter.snapshot()["done"] == 10
    tty = io.StringIO()
    bar = StageProgress("augment", stream=tty, tty=True)
    bar.expect(5)
    for _ in range(5):
        bar.advance()
    bar.close()
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()


def test_without_a_stage_the_hooks_do_nothing():
    progress.expect(3)
    progress.retry("x")
    progress.advance("x")
    assert progress.current() is None


# --- status -----------------------------------------------------------------------------

def test_status_file_is_rewritten_with_a_heartbeat_and_goes_stale(tmp_path):
    state = {"iteration": 2, "stage": "generate", "done": 5, "total": 10}
    writer = StatusWriter(tmp_path, lambda: dict(state), interval_s=0.05, stale_after_s=60).start()
    first = read_status(tmp_path)["heartbeat"]
    time.sleep(0.3)
    state["done"] = 7
    time.sleep(0.2)
    now = read_status(tmp_path)
    assert now["done"] == 7 and now["heartbeat"] >= first and now["pid"] == os.getpid()
    writer.stop("finished")
    assert read_status(tmp_path)["state"] == "finished"
    running = {**now, "state": "running"}
    assert describe(running).startswith("status: running, iteration 2, stage generate 7/10")
    assert "stale" in describe(running, now=now["heartbeat"] + 61)


def test_flatten_keeps_numbers_only():
    assert flatten({"a": {"b": 1, "c": None, "d": [1, 2], "e": True, "f": "x"}, "g": 2.5}, "p/") == \
        {"p/a/b": 1.0, "p/g": 2.5}


# --- end to end on the tiny model -----------------------------------------------------

SMALL = ["iterations=1", "loop.augment.new_per_language=4", "eval.every_iteration=false", "train.logging_steps=1",
         "loop.sampling.max_tokens=256", "train.epochs=1"]


def _scalars(logdir) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_killed_then_resumed_is_watched_and_tracked_as_one_run(tmp_path, model_cache, tiny_model):
    """One run with TensorBoard and MLflow: status.json is valid JSON at every read while it
    goes, it is killed in the generate stage (inspect: stale), then resumed to the end; the
    trackers hold one run with the stage, iteration and training curves."""
    args = ["run", *SMALL, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=w",
            "tracking=[tensorboard,mlflow]", "status.interval_s=0.5", "status.stale_after_s=3"]
    root = tmp_path / "w"
    log = tmp_path / "killed.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "selflengthen", *args], cwd=REPO, start_new_session=True,
                                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reads, seen_stages, deadline = 0, set(), time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            if (root / "status.json").exists():
                status = json.loads((root / "status.json").read_text())  # never a torn file
                reads += 1
                seen_stages.add(status["stage"])
                if status["stage"] in ("generate", "extend"):  # killed mid-way through the engine's stages
                    break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        leftovers = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        for pid in leftovers.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert reads > 5 and "augment" in seen_stages, (reads, seen_stages)
    tracked = json.loads((root / "tracking" / "tracking.json").read_text())
    run_id = tracked["mlflow"]["run_id"]  # opened when augmentation finished

    time.sleep(3.5)
    stale = run_cli("inspect", "w", "--iterations-dir", str(tmp_path), cwd=REPO)
    assert stale.returncode == 0, stale.stderr
    assert "status: stale" in stale.stdout and ("stage generate" in stale.stdout or "stage extend" in stale.stdout), \
        stale.stdout

    done = run_cli(*args, cwd=REPO)  # resumes, and continues the same tracker runs
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("iter 1 ")]
    for stage in ("generate", "extend", "train"):
        stage_lines = [ln for ln in lines if ln.startswith(f"iter 1 {stage}:")]
        assert 1 <= len(stage_lines) <= 11, lines
    assert json.loads((root / "status.json").read_text())["state"] == "finished"
    assert json.loads((root / "tracking" / "tracking.json").read_text())["mlflow"]["run_id"] == run_id

    scalars = _scalars(root / "tracking" / "tensorboard")
    for tag in ("stage/augment/counts/instructions", "stage/generate/counts/passed_quality",
                "stage/generate/engine/tokens_per_second", "stage/extend/counts/accepted",
                "iteration/words/initial/mean", "iteration/words/extended/p90", "iteration/acceptance/generate_quality",
                "iteration/training/generator/train_loss", "iteration/tokens/completion_tokens"):
        assert tag in scalars, sorted(scalars)
        assert [e.step for e in scalars[tag]][-1] == 1
    assert len(scalars["stage/augment/counts/instructions"]) == 1  # logged before the kill, not again
    metrics = json.loads((root / "iter_1" / "metrics.json").read_text())
    assert scalars["iteration/words/initial/mean"][0].value == pytest.approx(metrics["words"]["initial"]["mean"])
    train_runs = list((root / "tracking" / "tensorboard" / "train" / "iter_1").iterdir())
    assert sorted(p.name for p in train_runs) == ["extender", "generator"]
    assert "train/loss" in _scalars(train_runs[0])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'tracking' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("selflengthen")
    runs = client.search_runs([experiment.experiment_id])
    main = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in main] == [run_id] and main[0].info.status == "FINISHED"
    assert main[0].data.metrics["iteration/words/initial/mean"] == pytest.approx(metrics["words"]["initial"]["mean"])
    assert main[0].data.params["run.name"] == "w"
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id}
    assert sorted(children) == ["iter_1/extender", "iter_1/generator"]
    history = client.get_metric_history(children["iter_1/generator"].info.run_id, "loss")
    assert history and all(h.step >= 1 for h in history)


def test_wandb_runs_offline_and_a_resumed_run_keeps_its_id(tmp_path):
    from hydra import compose, initialize_config_dir

    from selflengthen.cli import CONF_DIR
    from selflengthen.tracking import Tracker

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["tracking=wandb", f"paths.iterations_dir={tmp_path}", "run.name=r"])
    ids = []
    for step in (1, 2):  # the run, then its resumption
        tracker = Tracker(cfg, tmp_path / "r")
        tracker.log({"iteration/words/initial/mean": 100.0 * step}, step)
        tracker.table("samples/extend", ["instruction", "extended"], [["write", "a long text"]], step)
        report = tracker.train_report(step, "generator")
        tracker.close(True)
        ids.append(tracker.state["wandb"]["id"])
    assert ids[0] == ids[1]
    assert report["report_to"] == ["wandb"] and report["env"]["WANDB_MODE"] == "offline"
    runs = sorted((tmp_path / "r" / "tracking" / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(ids[0]) and list(r.glob("*.wandb")) for r in runs)
