"""Per-sample bookkeeping shared by the stages: seeds derived from a sample's identity
(so a resumed stage draws what an uninterrupted one would have) and the per-sample
checkpoint (each finished sample is appended as it finishes; a killed stage redoes at
most the samples that were in flight)."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from selflengthen.store import artifacts


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from the parts' text: the same parts give the same seed in every process."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def sample_rng(*parts: object) -> random.Random:
    return random.Random(stable_seed(*parts))


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left half-written, so the next append starts a line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class SampleLog:
    """The stage's checkpoint, `partial/<stage>.jsonl`: one line per finished sample,
    keyed by `id`. Appends are flushed and fsync'ed; a torn last line is ignored."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None and path.exists():
            drop_torn_tail(path)
        rows = artifacts.read_jsonl(path) if path is not None and path.exists() else []
        self.done: dict[str, dict] = {r["id"]: r for r in rows if "id" in r}

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.done

    def add(self, entry: dict) -> None:
        self.done[entry["id"]] = entry
        if self.path is not None:
            artifacts.append_jsonl(self.path, [entry])
            artifacts.crash_point(f"checkpoint:{self.path.stem}")  # a test hook, inert by default

    def values(self) -> list[dict]:
        return list(self.done.values())

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
