"""Shared fixtures. The end-to-end tests use the embedded tiny model from the cache that
`make run` uses, building it there when it is missing (tests download nothing; runs write
only under tmp)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from selflengthen.config import verbs

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Parallel workers share the cores: each run a test starts gets its share of threads
    # (workers.thread_cap), as two runs sharing a machine should; more stall OpenMP.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def script_module(name: str):
    """A script under scripts/ imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# A test's subprocess is stopped by a watchdog on its progress, not by a wall-clock limit that
# a slower CPU or a busy machine can reach: its whole session is killed once neither its output
# nor a status.json under its output folders (a run's heartbeat, every status.interval_s) has
# changed for QUIET_S. A live run prints a line per stage's 10% or minute, and its longest
# silent steps (an engine start, an adapter's training, building the tiny model: 198-250 s on
# the machines in docs/testing.md) stay well under 600 s. CAP_S bounds one that keeps writing
# without end: 3x+ the slowest test subprocess measured anywhere, the SmolLM2 run's 912 s on
# the AVX2-only EPYC (docs/testing.md).
QUIET_S = float(os.environ.get("SELFLENGTHEN_TEST_QUIET_S", 600))
CAP_S = float(os.environ.get("SELFLENGTHEN_TEST_CAP_S", 3600))


class Watchdog:
    """Whether a test's subprocess still makes progress: new output (`progressed()`, or a log
    file that grows), or a changed status.json under the watched folders (a run's heartbeat)."""

    def __init__(self, watch: tuple[Path, ...] = (), log: Path | None = None, quiet_s: float = QUIET_S,
                 cap_s: float = CAP_S):
        import time

        self.watch, self.log, self.quiet_s, self.cap_s = tuple(watch), log, quiet_s, cap_s
        self.started = self.last = time.monotonic()
        self.seen = self.now_seen()

    def now_seen(self) -> tuple:
        size = self.log.stat().st_size if self.log is not None and self.log.exists() else 0
        return size, status_beats(self.watch)

    def progressed(self) -> None:
        import time

        self.last = time.monotonic()

    def expired(self) -> str | None:
        """Why the subprocess should be stopped now, or None while it makes progress."""
        import time

        seen = self.now_seen()
        if seen != self.seen:
            self.seen = seen
            self.progressed()
        now = time.monotonic()
        if now - self.last > self.quiet_s:
            return f"no new output and no status.json change for {self.quiet_s:.0f} s (the watchdog, tests/conftest.py)"
        if now - self.started > self.cap_s:
            return f"still running after {self.cap_s:.0f} s (CAP_S, tests/conftest.py)"
        return None


def run_watched(cmd: list[str], *, cwd: Path, env: dict | None = None, watch: tuple[Path, ...] = (),
                input: str | None = None, quiet_s: float = QUIET_S, cap_s: float = CAP_S) -> subprocess.CompletedProcess:
    """`cmd` run to its end (in `env`, the whole environment; None: this one's), its stdout
    and stderr streamed and given back as text, as
    subprocess.run(capture_output=True, text=True) gives them; when it stops making progress
    (Watchdog: no output line, no status.json change under `watch`, for `quiet_s`) or runs
    past `cap_s`, its whole session (Ray's workers too) is killed and the test fails."""
    import threading
    import time
    import uuid

    mark = uuid.uuid4().hex  # on its processes, Ray's workers too: the watchdog kills them all
    full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1", MARK: mark}
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, text=True, errors="replace", start_new_session=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dog = Watchdog(watch, quiet_s=quiet_s, cap_s=cap_s)
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def read(name: str, stream) -> None:
        for line in stream:
            out[name].append(line)
            dog.progressed()

    readers = [threading.Thread(target=read, args=(n, getattr(proc, n)), daemon=True) for n in out]
    for t in readers:
        t.start()
    if input is not None:
        proc.stdin.write(input)
        proc.stdin.close()
    why = None
    while proc.poll() is None and why is None:
        time.sleep(0.2)
        why = dog.expired()
    if why:
        kill_all(proc.pid, mark)
    proc.wait()
    for t in readers:
        t.join(timeout=30)
    stdout, stderr = "".join(out["stdout"]), "".join(out["stderr"])
    if why:
        pytest.fail(f"{' '.join(map(str, cmd))[:300]}: {why}; killed. The end of its output:\n{stdout[-2000:]}\n"
                    f"{stderr[-3000:]}", pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def status_beats(folders: tuple[Path, ...]) -> tuple:
    """The (path, mtime, size) of every status.json under the folders: a run's heartbeat."""
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            for path in Path(folder).rglob("status.json"):
                try:
                    st = path.stat()
                except OSError:
                    continue
                found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(sorted(found))


OUTPUT_KEYS = ("paths.iterations_dir=", "out_dir=", "finalize.output_dir=")  # where a verb writes (status.json)


def run_cli(*args: str, cwd: Path, env: dict | None = None, **watched) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it, under the progress watchdog (run_watched),
    which watches the status.json of the folders its arguments name for output."""
    folders = tuple(Path(a.split("=", 1)[1]) for a in args if a.startswith(OUTPUT_KEYS))
    return run_watched([sys.executable, "-m", "selflengthen", *args], cwd=cwd, env={**os.environ, **(env or {})},
                       watch=folders, **watched)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Where the embedded models are built: the cache `make run` uses (SELFLENGTHEN_CACHE,
    else ~/.cache/selflengthen), keyed by each model's recipe, so a machine builds each
    recipe once for runs and tests alike (a fresh machine builds it here). The builder
    itself is tested from scratch on a small recipe (test_tiny_model.py).
    SELFLENGTHEN_TEST_MODEL_CACHE=fresh builds into the session's temporary folder instead;
    any other value names the cache folder."""
    from omegaconf import OmegaConf

    chosen = os.environ.get("SELFLENGTHEN_TEST_MODEL_CACHE")
    if chosen == "fresh":
        return tmp_path_factory.mktemp("model-cache")
    default = OmegaConf.load(REPO / "conf" / "config.yaml").paths.cache_dir  # the run's own default
    return Path(chosen or default).expanduser().resolve()


@pytest.fixture(scope="session")
def tiny_model(model_cache) -> Path:
    """The embedded model, built by the project's own builder into the session cache."""
    from selflengthen.models.tiny_model import ensure_tiny_model

    return ensure_tiny_model(model_cache)


E2E_ITERATIONS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`make test` runs on 2 pytest-xdist workers (--dist loadfile, pyproject.toml): each test
    file goes whole to one worker (its module fixtures start once), heaviest first (the
    minutes its `slow` markers estimate; 1 for a slow test that gives none), so that the
    workers end together."""
    def cost(item) -> float:
        slow = item.get_closest_marker("slow")
        return float(slow.kwargs.get("minutes", 1)) if slow else 0.01

    def unit(item) -> str:
        return item.nodeid.split("::")[0]

    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        u = unit(item)
        weight[u] = weight.get(u, 0.0) + cost(item)
        first.setdefault(u, i)
    # within a unit its heaviest test first (the sort is stable: ties keep their order): xdist
    # hands a worker its next unit once 2 of its tests are left, which should not happen while
    # a long one is still to come
    items.sort(key=lambda it: (-weight[unit(it)], first[unit(it)], -cost(it)))


VERB_CONFIGS = {v.name: v.config for v in verbs.VERBS if v.config}  # each verb's top config file in conf/


@pytest.fixture
def compose_config():
    """The one way tests compose a config: compose_config(*overrides, verb="run") gives the
    DictConfig the verb's Hydra job would get (conf/<its file>.yaml with the overrides)."""
    from selflengthen.config.files import compose

    def make(*overrides: str, verb: str = "run"):
        return compose(VERB_CONFIGS[verb], list(overrides))

    return make


@pytest.fixture
def hub_on_loopback(monkeypatch):
    """A loopback listener stands in for the Hugging Face hub, so that a config naming an
    uncached hub id validates as it would online, without a test reaching another address."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, model_cache, tiny_model):
    """A finished 2-iteration run of the real CLI on the tiny model (run name e2e), shared by
    the end-to-end tests of every verb that starts from a run (eval, finalize, ...). Each
    pytest-xdist worker that needs it makes its own: tests rerun it and finalize locks it."""
    out = tmp_path_factory.mktemp("runs")
    base_hash = sha256(tiny_model / "model.safetensors")
    args = ("run", f"iterations={E2E_ITERATIONS}", "run.name=e2e", f"paths.iterations_dir={out}",
            f"paths.cache_dir={model_cache}", "loop.augment.new_per_language=10", "eval.limit=6",
            # the preset's 1,024-token cap is for 4 iterations of growth; 2 iterations' drafts and
            # their 1.2x extensions fit in half (a CPU batch takes as long as its longest output)
            "loop.sampling.max_tokens=512",
            "loop.curate.length_hints=0.5")  # half the generator's rows state their length (tested below)
    proc = run_cli(*args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    return {"root": out / "e2e", "proc": proc, "args": args, "base_hash": base_hash, "model": tiny_model}


MARK = "SELFLENGTHEN_TEST_SESSION_MARK"  # inherited by every process a run starts, wherever it goes


def processes_of(session: int, mark: str) -> list[str]:
    """Live processes of the session, or carrying the run's mark in their environment (a
    process that left the session, as Ray's workers do, still has it): "PID command" each."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            env = (d / "environ").read_bytes()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and (int(fields[3]) == session or mark.encode() in env):  # a zombie is dead already
            found.append(f"{d.name} {cmd[:120]}")
    return found


def kill_listed(lines: list[str]) -> None:
    """SIGKILL each "PID ..." line of processes_of()."""
    for line in lines:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_all(session: int, mark: str) -> None:
    """SIGKILL the session's process group and every process carrying the run's mark, at once,
    as a lost node: the group alone leaves Ray's workers, which run in sessions of their own."""
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass
    kill_listed(processes_of(session, mark))


def kill_session_when(cmd: list[str], ready, log: Path, what: str, watch: tuple[Path, ...] = ()) -> None:
    """Run `cmd` in a session of its own; once `ready()` holds, SIGKILL every process of it
    (driver, Ray, vLLM, trainers: kill_all). The test fails when `cmd` ends first, or stops
    making progress before (Watchdog: its log and the status.json under `watch`)."""
    import time
    import uuid

    mark = uuid.uuid4().hex
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", MARK: mark})
    dog = Watchdog(watch, log=log)
    why = None
    try:
        while proc.poll() is None and not ready():
            why = dog.expired()
            if why:
                break
            time.sleep(0.05)
        assert why is None, f"{what}: {why}; killed: " + log.read_text()[-3000:]
        assert proc.poll() is None, f"{what} ended (rc {proc.returncode}) before it could be killed: " + \
            log.read_text()[-3000:]
    finally:
        kill_all(proc.pid, mark)
        proc.wait()
        kill_listed(processes_of(proc.pid, mark))  # anything started between the kill and the wait
