"""A stop answers at any moment, and nothing is left behind (core/stopping.py,
engines/cleanup.py, core/scratch.py).

Fast: an event loop blocked in a synchronous call (as the loop is in `ray.get` while an
engine starts or an adapter trains) is stopped inside that call by SIGTERM and by Ctrl-C;
Ray's conversion of the handler's exception into a plain KeyboardInterrupt still reads as
SIGTERM; a second signal raises at once; the processes carrying a command's token are
killed; the scratch folder goes.

Slow (the real CLI on the tiny model): SIGTERM, Ctrl-C and `timeout` (SIGTERM to the whole
group, Ray's own processes included) right after "starting the vllm engine" stop the run
before the engine reports ready (no stage starts: a log ordering, not a time), with the one
line and 130/143, and leave no process, scratch folder or lock; the same command then
resumes and runs to its end, again leaving nothing. SIGTERM during training and during
Ray's start, and a user error once Ray is up,
likewise keep every finished stage and leave nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from selflengthen.core import scratch, stopping
from selflengthen.core.errors import Terminated, run_async
from selflengthen.engines import cleanup
from tests.conftest import processes_of

EXPECTED = {signal.SIGTERM: Terminated, signal.SIGINT: KeyboardInterrupt}


@pytest.fixture
def stop_handlers():
    """Our handlers for the test, the previous ones back after it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    hook = threading.excepthook
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stopping.stops_at_any_moment()
    yield
    for s, handler in before.items():
        signal.signal(s, handler)
    threading.excepthook = hook


def _signal_soon(signum: int, after_s: float = 0.2) -> None:
    threading.Timer(after_s, lambda: os.kill(os.getpid(), signum)).start()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_loop_blocked_in_a_call_is_stopped_inside_the_call(stop_handlers, signum):
    """The loop cannot take the cancellation while a call blocks it: the signal is delivered
    again and raises inside the call, which is abandoned (the code after it never runs)."""
    reached: list[str] = []

    async def engine_start() -> None:
        _signal_soon(signum)
        time.sleep(120)  # what ray.get on a starting engine is to the loop
        reached.append("ready")

    with pytest.raises(EXPECTED[signum]) as raised:
        run_async(engine_start())
    assert reached == []
    assert (type(raised.value) is Terminated) == (signum == signal.SIGTERM)


def test_sigterm_re_raised_by_ray_as_keyboardinterrupt_is_still_sigterm(stop_handlers, capsys):
    """Ray turns an exception raised by a signal handler inside ray.get into a plain
    KeyboardInterrupt: the CLI still says "terminated (SIGTERM)" and exits 143."""
    from selflengthen.cli import user_errors

    async def like_ray_get() -> None:
        _signal_soon(signal.SIGTERM)
        try:
            time.sleep(120)
        except KeyboardInterrupt:
            raise KeyboardInterrupt() from None  # as Ray's check_signals does

    with pytest.raises(SystemExit) as exit_:
        with user_errors(False, "finished stages are kept"):
            run_async(like_ray_get())
    assert exit_.value.code == 143
    assert capsys.readouterr().err.splitlines() == [
        "selflengthen: terminated (SIGTERM); finished stages are kept, run the same command to resume"]


def test_what_a_stop_makes_fail_reads_as_the_stop(stop_handlers):
    """`timeout` signals the whole process group: Ray's raylet dies with the driver's SIGTERM,
    and the call waiting on it fails (LocalRayletDiedError) before the loop takes the
    cancellation. That failure is the stop: Terminated, not a traceback."""
    async def training() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here: the stop is recorded, the cancel scheduled
        raise RuntimeError("The task's local raylet died")  # ... and the call fails first

    with pytest.raises(Terminated):
        run_async(training())


def test_a_second_signal_raises_at_once_in_a_stuck_cleanup(stop_handlers):
    """The first SIGTERM cancels the loop's task; its cleanup then blocks; a second SIGTERM
    raises there at once instead of waiting for it."""
    import asyncio

    reached: list[str] = []

    async def stage() -> None:
        _signal_soon(signal.SIGTERM)
        try:
            await asyncio.sleep(120)
        finally:
            _signal_soon(signal.SIGTERM)
            time.sleep(120)  # a cleanup stuck in a call
            reached.append("cleaned up")

    with pytest.raises(Terminated):
        run_async(stage())
    assert reached == []


def test_a_stop_whose_handler_cannot_run_still_exits_in_one_line(tmp_path):
    """The main thread stuck where no signal handler can run (as in a synchronous call to a
    Ray GCS that `timeout` killed: Ray retries it 60 s, then aborts): the guard thread runs
    the forced-exit cleanups, prints the one line and exits 143; the stuck call never returns."""
    released = tmp_path / "released"
    code = (
        "import pathlib, signal, sys, time\n"
        "from selflengthen.core import stopping\n"
        "stopping.stops_at_any_moment()\n"
        "stopping.FORCE_AFTER_S = 0.5\n"
        "stopping.set_kept('finished stages are kept')\n"
        "stopping.on_forced_exit(lambda: pathlib.Path(sys.argv[1]).write_text('released'))\n"
        "from selflengthen.store.runlock import RunLock\n"
        "RunLock(pathlib.Path(sys.argv[2])).acquire()  # its holder file goes too\n"
        # SIGTERM blocked in the main thread alone: only the guard thread receives it, and the
        # handler, which runs in the main thread, cannot run while it sleeps
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        # 'ready' once the main thread sleeps (no bytecode runs there that could take the signal)
        "import os, threading\n"
        "main = threading.get_native_id()\n"
        "def announce():\n"
        "    while open(f'/proc/self/task/{main}/syscall').read().split()[0] not in ('230', '35'):\n"
        "        time.sleep(0.01)\n"
        "    print('ready', flush=True)\n"
        "threading.Thread(target=announce, daemon=True).start()\n"
        "time.sleep(300)\n"
        "print('returned', flush=True)\n")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", code, str(released), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "returned" not in out
    assert err.splitlines() == ["selflengthen: terminated (SIGTERM); finished stages are kept, run the same command "
                                "to resume"]
    assert released.read_text() == "released"
    assert (run / ".lock").exists() and not (run / ".lock.json").exists()


def test_the_processes_carrying_a_commands_token_are_killed_and_no_other():
    token = uuid.uuid4().hex
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen(sleep, env={**os.environ, cleanup.OWNER_ENV: token})
    other = subprocess.Popen(sleep, env={**os.environ, cleanup.OWNER_ENV: token + "x"})
    try:
        deadline = time.monotonic() + 60
        while ours.pid not in cleanup.marked(token) and time.monotonic() < deadline:
            time.sleep(0.05)  # its environment is readable once it has started
        assert cleanup.marked(token) == [ours.pid]
        assert cleanup.kill_marked(token) == []
        assert ours.wait() == -signal.SIGKILL and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_scratch_folder_holds_the_engines_temporary_files_and_goes(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(scratch.ENV, raising=False)
    monkeypatch.setattr(scratch, "_claimed", None)
    root = scratch.claim()
    assert root.parent == tmp_path and os.environ[scratch.ENV] == str(root)
    merged = scratch.folder("selflengthen-merged-")
    assert merged.parent == root
    for key in ("TMPDIR", "RAY_TMPDIR", "TORCHINDUCTOR_CACHE_DIR"):  # restored after the test, set or not:
        monkeypatch.setenv(key, "")  # a later test's Ray must not inherit this test's folders (its socket
        monkeypatch.delenv(key)  # paths would pass the 107-byte limit of AF_UNIX)
    cleanup._workers_temp_in_scratch()  # what Ray's processes inherit: their temporary files go inside ...
    assert os.environ["TMPDIR"] == str(root)
    assert os.environ["RAY_TMPDIR"] == str(tmp_path)  # ... Ray's session folder and torch's cache do not
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path / "torchinductor_"))
    scratch.release()
    assert not root.exists() and scratch.ENV not in os.environ


ABANDONED_TASK = """
import gc, os, sys, time
import ray
from selflengthen.core.stopping import quiet_ending

ray.init(num_cpus=1, include_dashboard=False)

@ray.remote(max_retries=0)
def dies():
    os._exit(1)

ref = dies.remote()
time.sleep(6)  # the worker died; nobody asked for the result (a ray.get a stop abandoned)
if sys.argv[1] == "ending":
    quiet_ending()
del ref
gc.collect()
time.sleep(5)  # Ray reports an unread error once its reference is gone
ray.shutdown()
"""


@pytest.mark.slow(minutes=1)
def test_a_task_abandoned_by_an_ending_command_is_not_reported_after_its_last_line(tmp_path):
    """A stop during training abandons the trainer's task, whose worker then dies: Ray logs
    "Unhandled error ... The worker died unexpectedly" once the reference is collected, after
    the CLI's one line. Once the command is ending (quiet_ending, run by every stop
    and every one-line error) Ray stays silent; before, it reports (the control)."""
    script = tmp_path / "abandon.py"
    script.write_text(ABANDONED_TASK)
    logs = {}
    for mode in ("running", "ending"):
        env = {k: v for k, v in os.environ.items() if k != "RAY_IGNORE_UNHANDLED_ERRORS"}
        done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=300,
                              env=env, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr[-2000:]
        logs[mode] = done.stdout + done.stderr
    assert "Unhandled error" in logs["running"], logs["running"][-2000:]
    assert "Unhandled error" not in logs["ending"], logs["ending"][-2000:]


def _failing_thread(name: str) -> None:
    def fail() -> None:
        raise RuntimeError(f"{name}: Cancelling all calls")

    t = threading.Thread(target=fail, name=name)
    t.start()
    t.join()


def test_a_ray_threads_failure_is_silent_once_the_command_is_ending(stop_handlers, monkeypatch):
    """`timeout` kills Ray's GCS with the driver: Ray's error-listening thread fails as its
    connection goes, which Python prints as a traceback beside the CLI's line. Once the
    command is ending, a Ray thread's failure is not handed on to the hook before ours (what
    prints it); another thread's still is, and a Ray thread's before the end too."""
    reported: list[str] = []
    monkeypatch.setattr(stopping, "_thread_hook", lambda args: reported.append(args.thread.name))
    monkeypatch.setattr(stopping, "_ending", False)
    monkeypatch.setenv("RAY_IGNORE_UNHANDLED_ERRORS", "-")
    assert threading.excepthook is stopping._quiet_ray_threads  # installed with the stop handlers
    _failing_thread("ray_listen_error_messages")
    assert reported == ["ray_listen_error_messages"]  # not ending yet: reported
    stopping.quiet_ending()
    _failing_thread("ray_listen_error_messages")
    _failing_thread("selflengthen-writer")
    assert reported == ["ray_listen_error_messages", "selflengthen-writer"]


def test_a_stop_or_a_one_line_error_quiets_abandoned_tasks(stop_handlers, monkeypatch):
    """Each way a command ends in one line marks it as ending for Ray."""
    from selflengthen.cli import user_errors
    from selflengthen.core.errors import UserError

    monkeypatch.setenv("RAY_IGNORE_UNHANDLED_ERRORS", "-")  # recorded: the process's own value is back after the test
    for raised in (UserError("a bad path; give another"), KeyboardInterrupt()):
        monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)
        with pytest.raises(SystemExit):
            with user_errors(False, "finished stages are kept"):
                raise raised
        assert os.environ.get("RAY_IGNORE_UNHANDLED_ERRORS") == "1", raised
    monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)
    stopping.noticed()  # a handler took a stop signal
    assert os.environ.get("RAY_IGNORE_UNHANDLED_ERRORS") == "1"


# --- the real CLI on the tiny model -------------------------------------------------------------

SIZES = ["iterations=1", "loop.augment.new_per_language=4", "eval.every_iteration=false",
         "loop.sampling.max_tokens=256", "loop.extend.min_growth=1.05", "loop.extend.drop_short=false",
         "train.epochs=1", "engine.cpu_memory_utilization=0.05"]  # the machine is shared: a smaller KV cache
ENGINE_STARTING = "starting the vllm engine"
ENGINE_READY = "iteration 1: augment"  # the first thing the loop does with a started engine


def _left_behind(run, pid: int) -> list[str]:
    """Processes of the run (its session, or its mark: Ray's workers leave the session) and
    its scratch folders (named after the driver's pid), right after it ended: no waiting."""
    leftovers = processes_of(pid, run.mark)
    leftovers += [str(p) for p in Path(tempfile.gettempdir()).glob(f"selflengthen-{pid}-*")]
    return leftovers


def _ours(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("selflengthen:")]


STOPS = {"sigterm": signal.SIGTERM, "ctrl-c": signal.SIGINT, "timeout": signal.SIGTERM}


def _stop(run, how: str) -> None:
    if how == "sigterm":
        os.kill(run.proc.pid, signal.SIGTERM)  # `kill PID`, a scheduler's notice: the driver alone
    else:  # Ctrl-C: the terminal signals the whole foreground group; `timeout` its whole group too,
        os.killpg(run.proc.pid, STOPS[how])  # Ray's GCS and raylet included (started by the driver)


@pytest.mark.slow(minutes=6)
@pytest.mark.parametrize("how", list(STOPS))
def test_a_stop_during_the_engines_start_abandons_it_and_the_run_resumes(how, tmp_path, model_cache, tiny_model):
    from tests.test_crash_points import Run

    args = ["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=s"]
    run = Run(args, tmp_path / "stopped.log")
    run.wait_until(lambda: ENGINE_STARTING in run.log.read_text(errors="replace"), "starting the engine")
    signalled = time.monotonic()
    _stop(run, how)
    rc = run.wait()
    print(f"{how} during the engine's start: exit after {time.monotonic() - signalled:.1f} s")
    signum = STOPS[how]
    out = run.log.read_text(errors="replace")
    what, code = ("terminated (SIGTERM)", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    assert _ours(out) == [f"selflengthen: {what}; finished stages are kept, run the same command to resume"], out[-4000:]
    assert out.rstrip().endswith(_ours(out)[-1]), out[-2000:]  # nothing printed after it
    assert rc == code and "Traceback" not in out
    assert ENGINE_READY not in out  # stopped before the engine reported ready: its start was abandoned
    assert _left_behind(run, run.proc.pid) == []
    assert not (tmp_path / "s" / ".lock.json").exists()
    if how != "timeout":  # a forced exit (the stop guard: main thread stuck on a dead GCS) cannot write it;
        # status.json then reads "running" until its heartbeat goes stale (status.stale_after_s)
        assert json.loads((tmp_path / "s" / "status.json").read_text())["state"] == "failed"
    if how != "sigterm":
        return  # resuming once (below, after SIGTERM) is enough
    again = Run(args, tmp_path / "resumed.log")  # the same command: resumes, runs to its end
    assert again.wait() == 0, again.tail()
    out = again.log.read_text(errors="replace")
    assert ENGINE_READY in out and json.loads((tmp_path / "s" / "manifest.json").read_text())["iterations_completed"] == 1
    assert _left_behind(again, again.proc.pid) == []


@pytest.mark.slow(minutes=5)
def test_sigterm_during_training_stops_it_and_keeps_the_finished_stages(tmp_path, model_cache, tiny_model):
    from tests.test_crash_points import Run

    args = ["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=t"]
    run = Run(args, tmp_path / "stopped.log")
    it = tmp_path / "t" / "iter_1"
    run.wait_until(lambda: "iteration 1: train" in run.log.read_text(errors="replace"), "training")
    signalled = time.monotonic()
    _stop(run, "sigterm")
    rc = run.wait()
    print(f"SIGTERM during training: exit after {time.monotonic() - signalled:.1f} s")
    out = run.log.read_text(errors="replace")
    assert _ours(out) == ["selflengthen: terminated (SIGTERM); finished stages are kept, run the same command to "
                          "resume"], out[-4000:]
    assert rc == 143 and out.rstrip().endswith(_ours(out)[-1])
    assert not (it / "manifests" / "train.json").exists()  # stopped in it, not after it
    for stage in ("augment", "generate", "extend", "curate"):
        assert (it / "manifests" / f"{stage}.json").exists(), stage
    assert _left_behind(run, run.proc.pid) == []
    assert not (tmp_path / "t" / ".lock.json").exists()


@pytest.mark.slow(minutes=1)
def test_an_error_after_rays_start_leaves_nothing(tmp_path, model_cache, tiny_model):
    """A user error once the local Ray instance is up (training asks for more CPUs than it
    has): one line, exit 2, no Ray process or scratch folder left."""
    from tests.test_crash_points import Run

    run = Run(["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=e",
               "train.num_cpus=64"], tmp_path / "error.log")
    rc = run.wait()
    out = run.log.read_text(errors="replace")
    assert rc == 2 and len(_ours(out)) == 1 and "train.num_cpus=64" in _ours(out)[0], out[-3000:]
    assert out.rstrip().endswith(_ours(out)[-1])
    assert _left_behind(run, run.proc.pid) == []


@pytest.mark.slow(minutes=1)
def test_sigterm_during_rays_start_stops_in_one_line_and_leaves_nothing(tmp_path, model_cache, tiny_model):
    """SIGTERM once Ray's GCS is running, while ray.init still starts the rest (Ray's own
    handler is in place then, and exits with code 15): the one line, 143, nothing left."""
    from tests.test_crash_points import Run

    run = Run(["run", *SIZES, f"paths.iterations_dir={tmp_path}", f"paths.cache_dir={model_cache}", "run.name=r"],
              tmp_path / "ray.log")
    run.wait_until(lambda: any("gcs_server" in p for p in processes_of(run.proc.pid, run.mark)), "starting Ray")
    _stop(run, "sigterm")
    rc = run.wait()
    out = run.log.read_text(errors="replace")
    assert _ours(out) == ["selflengthen: terminated (SIGTERM); finished stages are kept, run the same command to "
                          "resume"], out[-3000:]
    assert rc == 143 and ENGINE_STARTING not in out
    assert _left_behind(run, run.proc.pid) == []


def test_a_forced_exit_leaves_the_status_stopped_not_running(tmp_path, compose_config):
    """What a forced exit runs (stopping.on_forced_exit) marks the run's status.json stopped,
    so `inspect` does not read a dead run as running; once the run has ended it is taken off."""
    from selflengthen import preflight
    from selflengthen.pipeline import observe
    from selflengthen.store.status import read_status

    settings = preflight.settings(compose_config("model=tiny", "tracking=none"), "run", here=False)
    root = tmp_path / "run"
    before = list(stopping._forced_exit)  # others' (killing processes, removing folders) are not run here
    with observe.watching(settings, root):
        assert read_status(root)["state"] == "running"
        added = [fn for fn in stopping._forced_exit if fn not in before]
        assert len(added) == 1
        added[0]()  # as the stop guard runs it before it exits
        assert read_status(root)["state"] == "stopped"
    assert stopping._forced_exit == before
