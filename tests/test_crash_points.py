"""Crash safety of a real run: the CLI's whole process group is SIGKILLed at five points of
the same run (during augmentation, generation, extension and training, and between a data
file and its manifest), resumed after each kill, and finally let finish. After every kill
no process of the killed session (Ray's, vLLM's) may be left; at the end the run is
complete, every id is unique in every JSONL, every sample a checkpoint held at a kill was
resumed, not redone, every finished stage's data is byte for byte what it was, and no file
is half-written. Ctrl-C (SIGINT to the group, as a terminal sends it) and SIGTERM (to the
driver alone) stop a run with one line and leave no process either.

The kills inside a stage are made deterministic with the test hook SELFLENGTHEN_CRASH_AT
(artifacts.crash_point: `checkpoint:<stage>@N` kills the process group right after the N-th
sample this process appends to partial/<stage>.jsonl; `manifest:<stage>` right after the
stage's data files are written, before its manifest); the training kill is made from
outside, once a trainer checkpoint is complete (train.save_every_steps), and the resumed
training must go on from that checkpoint. The same run is watched and tracked (status.json,
`inspect`, TensorBoard and MLflow): killed and resumed, it stays one tracked run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import MARK, REPO, Watchdog, kill_all, kill_listed, processes_of, run_cli, run_watched, sha256

# Small, but several items per stage: 4 instructions, 8 samples, >= 4 extension attempts,
# about ten training steps per adapter. About 5 minutes on 2 quiet cores (4 vLLM starts).
# A trainer checkpoint after every step: how many extensions the tiny model's build gets
# accepted (the training's examples) varies between machines, and with a single one (2
# steps) a checkpoint every 2 steps would come only as the training ends, leaving the kill
# no window; every step leaves at least one step after the first checkpoint.
SIZES = ["iterations=1", "loop.augment.new_per_language=4", "eval.every_iteration=false",
         "loop.sampling.max_tokens=256", "loop.extend.min_growth=1.05", "loop.extend.drop_short=false",
         "train.epochs=2", "train.save_every_steps=1", "train.logging_steps=1",
         "status.interval_s=0.2"]


# --- processes --------------------------------------------------------------------------------

def assert_nothing_left(session: int, mark: str, within_s: float = 90) -> None:
    """No process of the session outlives it by more than `within_s` (Ray's workers and
    vLLM's engine core notice their parents' death and exit; polled, so the bound is a
    ceiling for a loaded machine, not a wait); leftovers are killed, and fail."""
    deadline = time.time() + within_s
    while (left := processes_of(session, mark)) and time.time() < deadline:
        time.sleep(0.5)
    kill_listed(left)
    assert not left, f"left behind {within_s:g} s after the session ended: {left}"


class Run:
    """One invocation of the real CLI in a session (and process group) of its own."""

    def __init__(self, args: list[str], log: Path, crash_at: str | None = None):
        self.mark = uuid.uuid4().hex
        env = {**os.environ, "PYTHONUNBUFFERED": "1", MARK: self.mark}
        env.pop("SELFLENGTHEN_CRASH_AT", None)
        if crash_at:
            env["SELFLENGTHEN_CRASH_AT"] = crash_at
        self.log = log
        with log.open("w") as sink:
            # SIGINT as a terminal's foreground job has it: a suite started in the background of a
            # non-interactive shell (`pytest &`) inherits it ignored, and Python then never raises
            # KeyboardInterrupt (two local runs of the Ctrl-C test went on to the end that way)
            self.proc = subprocess.Popen([sys.executable, "-m", "selflengthen", *args], cwd=REPO,
                                         start_new_session=True, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.started = time.time()
        # stopped when it makes no progress (its log, the run's status.json), not by a time limit
        self.dog = Watchdog(tuple(Path(a.split("=", 1)[1]) for a in args if a.startswith("paths.iterations_dir=")),
                            log=log)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait(self) -> int:
        while self.proc.poll() is None:
            why = self.dog.expired()
            if why:
                kill_all(self.proc.pid, self.mark)
                self.proc.wait()
                pytest.fail(f"no end: {why}: {self.tail()}")
            time.sleep(0.2)
        return self.proc.returncode

    def wait_until(self, ready, what: str) -> None:
        while not ready():
            assert self.proc.poll() is None, f"ended (rc {self.proc.returncode}) before {what}: {self.tail()}"
            why = self.dog.expired()
            if why:
                kill_all(self.proc.pid, self.mark)
                self.proc.wait()
                pytest.fail(f"not {what}: {why}: {self.tail()}")
            time.sleep(0.05)


# --- the files of a run -----------------------------------------------------------------------

def rows(path: Path) -> list[dict]:
    """Every line of a JSONL (a checkpoint's torn last line, which a SIGKILL mid-append can
    leave and the stage cuts on resume, is left out)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                assert "partial" in path.parts and i == len(lines) - 1, f"{path} line {i + 1} is torn"
    return out


def checkpointed(it: Path) -> dict[str, dict[str, dict]]:
    """{stage: {id: row}} of the per-sample checkpoints (partial/<stage>.jsonl) now on disk."""
    return {p.stem: {r["id"]: r for r in rows(p)} for p in (it / "partial").glob("*.jsonl")}


def finished_data(it: Path) -> dict[str, str]:
    """sha256 of each data file of every stage whose manifest is written."""
    files = {"augment": ["instructions.jsonl"], "generate": ["initial.jsonl"], "extend": ["extended.jsonl"],
             "curate": ["sft/generator.jsonl", "sft/extender.jsonl"]}
    return {f: sha256(it / f) for stage, names in files.items() if (it / "manifests" / f"{stage}.json").exists()
            for f in names}


def complete_checkpoints(it: Path) -> dict[str, int]:
    """{role: newest complete trainer checkpoint's step} of the trainings in progress (a
    role whose training finished has its manifest and no work folder)."""
    from selflengthen.training import checkpoints

    found = {}
    for work in (it / "adapters").glob("*.trainer"):
        role = work.name.removesuffix(".trainer")
        if (it / "manifests" / f"train_{role}.json").exists():
            continue
        last = checkpoints.last_complete(work)
        if last:
            found[role] = last[1]
    return found


def _scalars(logdir) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def check_tracked_as_one_run(root: Path, run_id: str) -> None:
    """TensorBoard: every stage's and the iteration's scalars logged once, at iteration 1, and
    a training curve per role; MLflow: one finished main run with a child run per adapter."""
    from mlflow import MlflowClient

    scalars = _scalars(root / "tracking" / "tensorboard")
    for tag in ("stage/augment/counts/instructions", "stage/generate/counts/passed_quality",
                "stage/generate/engine/tokens_per_second", "stage/extend/counts/accepted",
                "iteration/words/initial/mean", "iteration/words/extended/p90", "iteration/acceptance/generate_quality",
                "iteration/training/generator/train_loss", "iteration/tokens/completion_tokens"):
        assert tag in scalars, sorted(scalars)
        assert [e.step for e in scalars[tag]] == [1], (tag, scalars[tag])  # once: not again after a resume
    metrics = json.loads((root / "iter_1" / "metrics.json").read_text())
    assert scalars["iteration/words/initial/mean"][0].value == pytest.approx(metrics["words"]["initial"]["mean"])
    train_runs = sorted((root / "tracking" / "tensorboard" / "train" / "iter_1").iterdir())
    assert [p.name for p in train_runs] == ["extender", "generator"]
    assert all("train/loss" in _scalars(p) for p in train_runs)

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'tracking' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("selflengthen").experiment_id])
    main = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in main] == [run_id] and main[0].info.status == "FINISHED"
    assert main[0].data.metrics["iteration/words/initial/mean"] == pytest.approx(metrics["words"]["initial"]["mean"])
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id}
    assert sorted(children) == ["iter_1/extender", "iter_1/generator"]
    history = client.get_metric_history(children["iter_1/generator"].info.run_id, "loss")
    assert history and all(h.step >= 1 for h in history)


def status(root: Path) -> dict:
    try:
        return json.loads((root / "status.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow(minutes=4)
def test_a_run_killed_at_five_points_resumes_each_time_and_loses_nothing(tmp_path, model_cache, tiny_model):
    args = ["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=crash",
            "tracking=[tensorboard,mlflow]", "status.stale_after_s=3"]
    root = tmp_path / "crash"
    it = root / "iter_1"
    held: dict[str, dict[str, dict]] = {}  # stage -> the checkpoint's rows at the last kill inside it
    finished: dict[str, str] = {}  # data file -> its hash once its stage's manifest was written
    kills = [  # (where, SELFLENGTHEN_CRASH_AT or None: killed from outside, what must hold right after)
        ("augment", "checkpoint:augment@2", lambda: not (it / "manifests/augment.json").exists()),
        ("generate", "checkpoint:generate@3", lambda: not (it / "manifests/generate.json").exists()),
        ("extend", "checkpoint:extend@2", lambda: not (it / "manifests/extend.json").exists()),
        ("curate: data written, no manifest", "manifest:curate",
         lambda: (it / "sft/generator.jsonl").exists() and not (it / "manifests/curate.json").exists()),
        ("train", None, lambda: not (it / "manifests/train.json").exists()),
    ]
    timings, sft_before_curate = [], {}
    for n, (where, crash_at, holds) in enumerate(kills):
        run = Run(args, tmp_path / f"kill-{n}.log", crash_at)
        if crash_at is None:  # from outside, once a trainer checkpoint is complete: every process
            # of the run at once, as a lost node; the group alone would leave Ray's training worker
            # (a child of the raylet, in a session of its own) saving checkpoints for a few seconds
            run.wait_until(lambda: complete_checkpoints(it), "training with a complete checkpoint")
            kill_all(run.proc.pid, run.mark)
        rc = run.wait()
        if crash_at is None:
            checkpoints_at_kill = complete_checkpoints(it)  # nothing changes after the kill
        if where == "generate":  # killed: `inspect` calls the run stale once its heartbeat is old
            time.sleep(3.5)
            seen = run_cli("inspect", "crash", "--iterations-dir", str(tmp_path), cwd=REPO)
            assert seen.returncode == 0 and "status: stale" in seen.stdout, seen.stdout + seen.stderr
            run_id = json.loads((root / "tracking" / "tracking.json").read_text())["mlflow"]["run_id"]
        timings.append((where, round(time.time() - run.started)))
        assert rc == -signal.SIGKILL, f"{where}: rc {rc}, not killed: {run.tail()}"
        assert holds(), f"{where}: not killed where intended: {sorted(p.name for p in it.rglob('*'))}"
        assert_nothing_left(run.proc.pid, run.mark)
        now = checkpointed(it)
        if where in now:
            assert len(now[where]) >= 2, (where, now[where])  # several samples were checkpointed
        held.update(now)
        for f, digest in finished_data(it).items():
            assert finished.setdefault(f, digest) == digest, f"{f} was rewritten after its stage finished"
        if where.startswith("curate"):  # written before the kill; curate runs again on resume
            sft_before_curate = {f: sha256(it / f) for f in ("sft/generator.jsonl", "sft/extender.jsonl")}

    last = Run(args, tmp_path / "complete.log")
    rc = last.wait()
    timings.append(("complete", round(time.time() - last.started)))
    assert rc == 0, last.tail()
    assert_nothing_left(last.proc.pid, last.mark)
    print("kill points and seconds per invocation:", timings)

    # complete: both manifests, both adapters, the status says finished
    assert json.loads((root / "manifest.json").read_text())["iterations_completed"] == 1
    assert json.loads((it / "manifest.json").read_text())["complete"] is True
    assert status(root)["state"] == "finished"
    # training: each role killed with a complete checkpoint went on from it, not from its start
    assert checkpoints_at_kill, "no trainer checkpoint at the training kill"
    for role in ("generator", "extender"):
        assert (it / "adapters" / role / "adapter_model.safetensors").exists()
        assert (it / "adapters" / role / "adapter_config.json").exists()
        assert not (it / "adapters" / f"{role}.trainer").exists()  # the work folder goes once the adapter is in
    for role, step in checkpoints_at_kill.items():
        trained = json.loads((it / "manifests" / f"train_{role}.json").read_text())
        # from that step to the end of the same schedule (a kill after the last checkpoint
        # but before the adapter was saved resumes at the end and only saves)
        assert trained["resumed_from_step"] == step and trained["steps"] >= step, (role, step, trained)
        assert len(trained["loss_curve"]) == trained["steps"], trained  # the steps before the kill are kept

    # watched and tracked as one run: the MLflow run opened before the kills is the one that
    # finished, and TensorBoard holds each stage once, the iteration and the training curves
    assert json.loads((root / "tracking" / "tracking.json").read_text())["mlflow"]["run_id"] == run_id
    check_tracked_as_one_run(root, run_id)

    # every id unique in every JSONL of every stage
    for path in root.rglob("*.jsonl"):
        ids = [r["id"] for r in rows(path) if "id" in r]
        assert len(ids) == len(set(ids)), f"{path}: repeated ids"
    # the samples checkpointed at a kill were resumed, not redone: the stage counted exactly
    # that many as resumed, and its output holds them unchanged
    manifests = {s: json.loads((it / "manifests" / f"{s}.json").read_text())["counts"]
                 for s in ("augment", "generate", "extend")}
    assert set(held) == {"augment", "generate", "extend"}, sorted(held)
    assert manifests["augment"]["resumed"] == sum(1 for r in held["augment"].values() if r["instruction"])
    assert manifests["generate"]["resumed_samples"] == len(held["generate"])
    assert manifests["extend"]["by_method"]["extend"]["resumed_attempts"] == len(held["extend"])
    out = {"augment": {r["id"]: r for r in rows(it / "instructions.jsonl")},
           "generate": {r["id"]: r for r in rows(it / "initial.jsonl")},
           "extend": {r["id"]: {k: v for k, v in r.items() if k != "method"} for r in rows(it / "extended.jsonl")}}
    for r in held["augment"].values():
        if r["instruction"]:
            assert out["augment"][f"{r['id']}"]["instruction"] == r["instruction"]
    for stage in ("generate", "extend"):  # drop-short may leave a sample out, never change it
        for sample_id, entry in held[stage].items():
            if entry["row"] is not None and sample_id in out[stage]:
                assert out[stage][sample_id] == entry["row"], (stage, sample_id)
    # a finished stage's data was never rewritten; the data curate wrote before its manifest
    # was written again the same
    for f, digest in finished.items():
        assert sha256(it / f) == digest, f"{f} changed after its stage finished"
    assert {f: sha256(it / f) for f in sft_before_curate} == sft_before_curate

    # nothing half-written: every JSON parses, every JSONL line parses, no temporary file
    # of an atomic write (<name>.tmp) and no checkpoint left
    for path in root.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    for path in root.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            json.loads(line)
    assert not [p for p in root.rglob("*.tmp")], sorted(map(str, root.rglob("*.tmp")))
    assert not list((it / "partial").glob("*.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_in_one_line_and_leaves_no_process(how, tmp_path, model_cache, tiny_model):
    """Ctrl-C (a terminal sends SIGINT to the whole foreground group) and SIGTERM to the
    driver alone (`kill PID`, a scheduler's notice), while vLLM generates. Before SIGTERM
    was handled, Ray's own handler printed a stack dump, aborted, and left Ray's agents running."""
    args = ["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=c"]
    it = tmp_path / "c" / "iter_1"
    run = Run(args, tmp_path / f"{how}.log")
    run.wait_until(lambda: (it / "partial" / "augment.jsonl").exists() or (it / "manifests/augment.json").exists(),
                   "generating")
    if how == "ctrl-c":
        os.killpg(run.proc.pid, signal.SIGINT)
    else:
        os.kill(run.proc.pid, signal.SIGTERM)
    rc = run.wait()  # bounded by the watchdog; that it stopped rather than went on: rc and status below
    out = run.log.read_text(errors="replace")
    assert "Traceback" not in out and "SIGTERM received" not in out, out[-4000:]
    ours = [line for line in out.splitlines() if line.startswith("selflengthen:")]
    what = "interrupted" if how == "ctrl-c" else "terminated (SIGTERM)"
    assert ours == [f"selflengthen: {what}; finished stages are kept, run the same command to resume"], out[-4000:]
    assert rc == (130 if how == "ctrl-c" else 143), out[-4000:]
    assert_nothing_left(run.proc.pid, run.mark)
    assert json.loads((tmp_path / "c" / "status.json").read_text())["state"] == "failed"


def test_sigterm_stops_like_ctrl_c_in_one_line(capsys):
    """SIGTERM raises errors.Terminated (so the engines and Ray shut down as on Ctrl-C); the
    CLI turns it into one line and exit 143."""
    from selflengthen.cli import user_errors
    from selflengthen.core.errors import Terminated, sigterm_stops_like_ctrl_c

    before = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_stops_like_ctrl_c()
        with pytest.raises(SystemExit) as exit_:
            with user_errors(False, "finished stages are kept"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the signal arrives here
                pytest.fail("SIGTERM did not stop the block")
        assert exit_.value.code == 143
        assert capsys.readouterr().err.splitlines() == [
            "selflengthen: terminated (SIGTERM); finished stages are kept, run the same command to resume"]
        with pytest.raises(Terminated):  # and again: it does not need re-arming
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGTERM, before)


# --- fast: the hook itself, and the data/manifest gap of a stage with a checkpoint ----------

@pytest.mark.parametrize("crash_at, survives", [(None, True), ("checkpoint:other", True), ("checkpoint:x@3", True),
                                                ("checkpoint:x@2", False), ("checkpoint:x", False)])
def test_the_crash_hook_is_inert_unless_named_and_kills_its_whole_group(crash_at, survives):
    """Three passes through crash_point("checkpoint:x"): a child of the process (its group)
    dies with it, as in a real run's engines."""
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "from selflengthen.store import artifacts\n"
            "for _ in range(2): artifacts.crash_point('checkpoint:x')\n"
            "child.kill(); print('survived', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k != "SELFLENGTHEN_CRASH_AT"}
    if crash_at:
        env["SELFLENGTHEN_CRASH_AT"] = crash_at
    proc = run_watched([sys.executable, "-c", code], cwd=REPO, env=env)  # in a session of its own
    child = int(proc.stdout.split()[0])
    assert (proc.returncode, "survived" in proc.stdout) == ((0, True) if survives else (-signal.SIGKILL, False))
    deadline = time.time() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().rsplit(")")[1][:3]:
        assert time.time() < deadline, "the child outlived its group's kill"
        time.sleep(0.1)


def test_generate_killed_between_its_data_and_its_manifest_redoes_no_sample(tmp_path, monkeypatch):
    """initial.jsonl written, manifests/generate.json not: the rerun takes every sample from
    the checkpoint (no request), writes the same data and then the manifest."""
    import asyncio

    from hydra import compose, initialize_config_dir

    from selflengthen.engines import Sampling
    from selflengthen.pipeline import stage
    from selflengthen.pipeline.stages import generate
    from selflengthen.store import artifacts
    from tests.fakes import ScriptedEngine, stage_inputs, typed

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["loop.generate.samples=2"])
    it = artifacts.IterationPaths(tmp_path / "iter_1", 1)
    artifacts.write_jsonl(it.instructions, [{"id": f"i-{n}", "language": "en", "instruction": f"Write about {n}."}
                                            for n in range(4)])
    counter = iter(range(10**6))

    def respond(request, sampling):  # distinct sentences of varied length, ending in a full stop
        n = next(counter)
        return " ".join(f"w{n}x{k}" for k in range(20 + 7 * (n % 5))) + "."

    class Died(BaseException):
        pass

    def crash_point(name):
        if name == "manifest:generate":
            raise Died(name)

    settings = typed(cfg)
    monkeypatch.setattr(artifacts, "crash_point", crash_point)
    first = ScriptedEngine(respond)
    with pytest.raises(Died):
        asyncio.run(stage.run_stage(generate.STAGE, settings, stage_inputs(settings, it, first, Sampling())))
    assert it.initial.exists() and not it.stage_done("generate") and it.checkpoint("generate").exists()
    data, samples = sha256(it.initial), len(rows(it.checkpoint("generate")))
    assert samples == 8 and len(first.requests) >= 8

    monkeypatch.undo()
    again = ScriptedEngine(respond)
    stats = asyncio.run(stage.run_stage(generate.STAGE, settings, stage_inputs(settings, it, again, Sampling())))
    assert again.requests == [] and stats["resumed_samples"] == samples
    assert sha256(it.initial) == data and it.stage_done("generate") and not it.checkpoint("generate").exists()


def test_sigterm_inside_an_event_loop_cancels_its_main_task_and_every_chain_unwinds_in_its_own_task(caplog):
    """SIGTERM landing inside one chain's task (here: a blocking write) must not raise
    there: the loop's main task is cancelled, every chain's `finally` runs in its own task
    and context (a stage's progress reporter is reset where it was set), nothing is left
    pending, and `Terminated` comes out of `run_async` once the loop has stopped. Raising
    in the interrupted task instead left the main task pending and logged a traceback."""
    import asyncio
    import contextvars
    import logging

    from selflengthen.core.errors import Terminated, run_async, sigterm_stops_like_ctrl_c

    current = contextvars.ContextVar("current", default=None)
    unwound: list[str] = []
    cancelled: list[int] = []

    async def chain(i: int) -> None:
        try:
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # blocking, as an fsync is: the signal's handler runs inside this task
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(i)  # stopped by the signal, not let run to the end of its sleep
            raise
        finally:
            unwound.append(f"chain {i}")

    async def stage() -> None:
        token = current.set("stage")
        try:
            await asyncio.gather(*(chain(i) for i in range(4)))
        finally:
            current.reset(token)  # ValueError if this ran in another context
            unwound.append("stage")

    before = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_stops_like_ctrl_c()
        caplog.set_level(logging.ERROR, logger="asyncio")
        with pytest.raises(Terminated):
            run_async(stage())
        assert sorted(cancelled) == [0, 1, 2, 3]  # every chain cancelled mid-sleep: none ran its 30 s out
        assert sorted(unwound) == ["chain 0", "chain 1", "chain 2", "chain 3", "stage"]
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
        assert run_async(asyncio.sleep(0, "again")) == "again"  # the next loop is not cancelled
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_as_the_event_loops_main_task_ends_still_stops():
    """A SIGTERM whose cancellation comes too late (the main task has already returned)
    must not be lost: `run_async` raises Terminated instead of returning."""
    import asyncio

    from selflengthen.core.errors import Terminated, run_async, sigterm_stops_like_ctrl_c

    async def ends_right_after_the_signal() -> str:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here and schedules the cancel ...
        return "done"  # ... which finds the task finished

    before = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_stops_like_ctrl_c()
        with pytest.raises(Terminated):
            run_async(ends_right_after_the_signal())
    finally:
        signal.signal(signal.SIGTERM, before)
