"""Each step of a run's held-out curve, item by item: how many answers got longer or shorter
from one iteration's generator to the next, and the mean change in words with its standard
error. Answers are paired by id (`<item>` or `<item>~j` with eval.samples), so a step is
measured against the noise of its own answers rather than read off two means.

    .venv/bin/python scripts/heldout_steps.py RUN [RUN ...] [--benchmark heldout_tiny]

RUN is a run's name under iterations/ or its folder.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from selflengthen.evaluation import in_run, runner
from selflengthen.store import artifacts

REPO = Path(__file__).resolve().parent.parent


def answers(paths: artifacts.RunPaths, k: int, benchmark: str) -> dict[str, int] | None:
    """{answer id: words} of iteration k's finished held-out evaluation (its summary is
    written last), or None when it has none."""
    evaluation = runner.EvalPaths(in_run.eval_dir(paths, k, benchmark))
    if not evaluation.summary.exists():
        return None
    return {row["id"]: int(row["words"]) for row in artifacts.read_jsonl(evaluation.predictions)}


def steps(paths: artifacts.RunPaths, benchmark: str) -> list[dict]:
    """One row per step k-1 -> k over the answers both evaluations hold."""
    rows, before, k = [], answers(paths, 0, benchmark), 1
    while before is not None and (after := answers(paths, k, benchmark)) is not None:
        change = [after[i] - before[i] for i in after if i in before]
        rows.append({"step": f"{k - 1} -> {k}", "answers": len(change), "longer": sum(c > 0 for c in change),
                     "shorter": sum(c < 0 for c in change), "mean": statistics.fmean(change),
                     "se": statistics.stdev(change) / len(change) ** 0.5 if len(change) > 1 else float("nan")})
        before, k = after, k + 1
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--benchmark", default="heldout_tiny")
    a = p.parse_args()
    for run in a.runs:
        root = Path(run) if Path(run).is_dir() else REPO / "iterations" / run
        print(f"{root.name} ({a.benchmark})")
        print("step     answers  longer  shorter  mean change (words)  se")
        for r in steps(artifacts.RunPaths(root), a.benchmark):
            print(f"{r['step']:<8} {r['answers']:>7}  {r['longer']:>6}  {r['shorter']:>7}  {r['mean']:>+19.1f}  {r['se']:.1f}")


if __name__ == "__main__":
    main()
