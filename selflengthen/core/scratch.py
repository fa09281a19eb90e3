"""One temporary folder per command, for the files its engines keep while they run (merged
weights, the copy of vLLM's error log): removed when the command ends, however it ends
(normally, by an error, Ctrl-C or SIGTERM; a SIGKILL aside).

The command (the driver) `claim`s it before it starts Ray; the processes it starts
inherit its path (SELFLENGTHEN_SCRATCH) and make their folders inside it, so a replica
killed mid-start leaves nothing that the driver does not remove. Where no command claimed
one (a library call, a Ray cluster started elsewhere), folders go to the system's
temporary folder and their owner removes them."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "SELFLENGTHEN_SCRATCH"
_claimed: Path | None = None  # this process's own, when it claimed one


def folder(prefix: str) -> Path:
    """A new folder inside the command's scratch folder (or the system's temporary folder)."""
    root = os.environ.get(ENV, "")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root if root and os.path.isdir(root) else None))


def claim() -> Path:
    """This process's scratch folder, made once; its children inherit it."""
    global _claimed
    if _claimed is None or not _claimed.is_dir():
        _claimed = Path(tempfile.mkdtemp(prefix=f"selflengthen-{os.getpid()}-"))
        os.environ[ENV] = str(_claimed)
    return _claimed


def release() -> None:
    """Remove this process's scratch folder (what its engines left inside included)."""
    global _claimed
    if _claimed is not None:
        shutil.rmtree(_claimed, ignore_errors=True)
        if os.environ.get(ENV) == str(_claimed):
            del os.environ[ENV]
        _claimed = None

