"""Trainer checkpoints a killed training resumes from.

TRL writes `checkpoint-<step>/` folders into the adapter's work folder every
`train.save_every_steps` steps. A checkpoint counts only once every rank has finished
writing it: then rank 0 fsyncs its files and writes a marker, last. A rerun resumes from
the newest folder with a marker; folders without one (a kill mid-save) are removed first.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from selflengthen.store.artifacts import write_json
from selflengthen.training import ranks

MARKER = "selflengthen_complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def fsync_tree(folder: Path) -> None:
    """Flush every file under folder, and the folders themselves, to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_dir(Path(root) / name)
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    """fsync a folder (its entries: a rename into it) or a file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def step_of(folder: Path) -> int | None:
    match = _NAME.match(Path(folder).name)
    return int(match.group(1)) if match else None


def last_complete(work_dir: Path) -> tuple[Path, int] | None:
    """(folder, step) of the newest complete checkpoint in work_dir, or None."""
    found = [(step_of(p), p) for p in Path(work_dir).glob("checkpoint-*") if step_of(p) is not None and complete(p)]
    if not found:
        return None
    step, folder = max(found)
    return folder, step


def drop_incomplete(work_dir: Path) -> list[str]:
    """Remove the checkpoint folders a kill left half-written; their names."""
    dropped = []
    for p in Path(work_dir).glob("checkpoint-*"):
        if p.is_dir() and step_of(p) is not None and not complete(p):
            shutil.rmtree(p, ignore_errors=True)
            dropped.append(p.name)
    return sorted(dropped)


def tensors_digest(tensors: dict) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, in name order: the same for
    the trainer's in-memory LoRA weights and the safetensors file they were saved to."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mark_complete_callback():
    """A TRL callback run after each checkpoint save, on every rank: once all ranks are
    there (their optimizer and RNG files are written), rank 0 fsyncs the folder and writes
    the marker that makes it a checkpoint to resume from."""
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ranks.barrier()
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                fsync_tree(folder)
                write_json(folder / MARKER, {"step": state.global_step, "max_steps": state.max_steps,
                                             "world_size": args.world_size})
            ranks.barrier()

    return MarkComplete()

