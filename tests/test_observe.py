"""Watching a run: the per-stage progress (bounded without a terminal), the live
status.json and `inspect`'s view of it (running, stale), and the experiment trackers read
back with their own readers (TensorBoard's EventAccumulator, MLflow's client). A real run
killed and resumed into the same tracker run is in tests/test_crash_points.py."""
from __future__ import annotations

import io
import os
import time

from selflengthen.core import progress
from selflengthen.core.progress import StageProgress
from selflengthen.store.status import StatusWriter, describe, read_status
from selflengthen.tracking import flatten


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
    state["done"] = 7
    # the writer thread rewrites it on its own: wait (bounded) for a rewrite that shows the new
    # count with a later heartbeat (rounded to 0.1 s), however slowly that thread gets the CPU
    deadline = time.monotonic() + 30
    while True:
        now = read_status(tmp_path)
        if now["done"] == 7 and now["heartbeat"] > first or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert now["done"] == 7 and now["heartbeat"] > first and now["pid"] == os.getpid(), now
    writer.stop("finished")
    assert read_status(tmp_path)["state"] == "finished"
    running = {**now, "state": "running"}
    assert describe(running).startswith("status: running, iteration 2, stage generate 7/10")
    assert "stale" in describe(running, now=now["heartbeat"] + 61)


def test_flatten_keeps_numbers_only():
    assert flatten({"a": {"b": 1, "c": None, "d": [1, 2], "e": True, "f": "x"}, "g": 2.5}, "p/") == \
        {"p/a/b": 1.0, "p/g": 2.5}


# --- end to end: tests/test_crash_points.py runs a real run with TensorBoard and MLflow,
# killed at five points and resumed: status.json, `inspect` (stale) and the trackers hold one run


def test_wandb_runs_offline_and_a_resumed_run_keeps_its_id(tmp_path):
    from selflengthen.config.files import compose
    from tests.fakes import tracker_of

    cfg = compose("config", ["tracking=wandb", f"paths.iterations_dir={tmp_path}", "run.name=r"])
    ids = []
    for step in (1, 2):  # the run, then its resumption
        tracker = tracker_of(cfg, tmp_path / "r")
        tracker.log({"iteration/words/initial/mean": 100.0 * step}, step)
        tracker.table("samples/extend", ["instruction", "extended"], [["write", "a long text"]], step)
        report = tracker.train_report(step, "generator")
        tracker.close(True)
        ids.append(tracker.state["wandb"]["id"])
    assert ids[0] == ids[1]
    assert report["report_to"] == ["wandb"] and report["env"]["WANDB_MODE"] == "offline"
    # What the product promises: both sessions wrote offline data under the one run id. How
    # W&B names the folders is its own affair (two sessions in the same second get
    # "...-<id>" and "...-<id>-1"), so only the run files inside them are checked.
    files = sorted((tmp_path / "r" / "tracking" / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.name for f in files} == {f"run-{ids[0]}.wandb"}
