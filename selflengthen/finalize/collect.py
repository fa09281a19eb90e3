"""Collect the final training pairs of a run (algorithm.md 1.4, "after the loop"): every
accepted (instruction, extended response) of every complete iteration, exact-duplicate
responses removed, each row carrying where it came from."""
from __future__ import annotations

from pathlib import Path

from selflengthen.core.errors import UserError
from selflengthen.store import artifacts


def collect(run_root: Path, *, allow_unfinished: bool = False) -> tuple[list[dict], dict]:
    """Rows {id, iteration, source_id, instruction_id, language, instruction, response,
    words} from iter_<k>/extended.jsonl of every iteration whose manifest.json exists,
    ordered by iteration then source id; a response seen before is dropped (the first
    one, by iteration then id, is kept).

    An iteration folder without manifest.json is unfinished: a UserError names it and
    the way to finish it, unless allow_unfinished=True, which skips it (its extended.jsonl,
    if any, may be partial or not yet resampled, so it is never used)."""
    paths = artifacts.RunPaths(Path(run_root))
    iterations = paths.iterations()
    if not iterations:
        raise UserError(f"no iterations in {paths.root} -- point finalize at a run folder "
                        f"(iterations/<run.name>) made by `python -m selflengthen run`")
    unfinished = [it.k for it in iterations if not it.manifest.exists()]
    if unfinished and not allow_unfinished:
        names = ", ".join(f"iter_{k}" for k in unfinished)
        raise UserError(f"run {paths.root.name} has unfinished iterations ({names}): finish them with "
                        f"`python -m selflengthen run run.name={paths.root.name}` (same settings; it resumes), "
                        f"or pass allow_unfinished=true to finalize only the complete ones")
    rows, seen = [], set()
    stats = {"iterations": [], "skipped_unfinished": unfinished, "read": 0, "duplicates_removed": 0,
             "per_iteration": {}}
    for it in iterations:
        if it.k in unfinished:
            continue
        if not it.extended.exists():
            raise UserError(f"{it.root} is marked complete but has no {it.extended.name}; the run folder is "
                            f"damaged -- restore the file from a backup, or start a new run (another run.name)")
        source = sorted(artifacts.read_jsonl(it.extended), key=lambda r: str(r["id"]))
        kept = 0
        for row in source:
            stats["read"] += 1
            if row["response"] in seen:
                stats["duplicates_removed"] += 1
                continue
            seen.add(row["response"])
            kept += 1
            rows.append({"id": f"it{it.k}-{row['id']}", "iteration": it.k, "source_id": row["id"],
                         "instruction_id": row["instruction_id"], "language": row["language"],
                         "instruction": row["instruction"], "response": row["response"], "words": row["words"]})
        stats["iterations"].append(it.k)
        stats["per_iteration"][str(it.k)] = kept
    stats["rows"] = len(rows)
    return rows, stats
