"""How much the demo depends on its tiny model's build: `make run`'s command once per build
seed (`model.build.seed=0,1,2`, each model built from scratch unless cached), then the
held-out curve of each side by side, as a dated table and an overlay plot under
docs/experiments/, with the commit, each build's fingerprint and each run's wall time.

    .venv/bin/python scripts/demo_builds.py [--seeds 0,1,2] [--iterations 4] [KEY=VALUE ...]

Runs are named build<seed> under iterations/; a finished one is reused (delete it, or its
model under ~/.cache/selflengthen/, to measure it afresh). A curve "rises" when each
iteration's held-out mean is above the one before (iteration 0 = the base model).
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

from omegaconf import OmegaConf

from selflengthen.evaluation import in_run
from selflengthen.store import artifacts

REPO = Path(__file__).resolve().parent.parent
BENCH = "heldout_tiny"


def held_out(root: Path) -> dict[int, dict]:
    """{iteration: headline} of each finished held-out evaluation, in order."""
    return {k: per[BENCH] for k, per in sorted(in_run.load(artifacts.RunPaths(root)).items()) if BENCH in per}


def rises(curve: list[float]) -> bool:
    return all(b > a for a, b in zip(curve, curve[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    walls, names = {}, []
    for seed in seeds:
        name = f"build{seed}"
        names.append(name)
        command = [sys.executable, "-m", "selflengthen", "run", f"iterations={a.iterations}",
                   f"model.build.seed={seed}", f"run.name={name}", *a.overrides]
        started = time.time()
        if subprocess.run(command, cwd=REPO).returncode != 0:
            sys.exit(f"the run of build seed {seed} failed; rerun the same command to resume it")
        walls[seed] = time.time() - started
    subprocess.run([sys.executable, "-m", "selflengthen", "inspect", *names], cwd=REPO, check=True)
    day = date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    out = REPO / "docs" / "experiments"
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{day}-tiny-builds-{commit}.png"  # the commit in the name: a later run never overwrites
    (REPO / "iterations" / "compare_length_curves.png").replace(png)
    lines = ["| build seed | weights digest | held-out mean words, iterations 0-" f"{a.iterations} | "
             "median words | verdict/empty/cut per iteration | rises at every step | this invocation |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed, name in zip(seeds, names):
        root = REPO / "iterations" / name
        curve = held_out(root)
        build = json.loads((root / "manifest.json").read_text()).get("model_build") or {}
        words = [c["mean_words"] for c in curve.values()]
        medians = [c.get("median_words") for c in curve.values()]  # None for a run scored before it existed
        counts = ["/".join(str((c.get("not_writing") or {}).get(k, "-")) for k in ("verdict", "empty", "cut"))
                  for c in curve.values()]
        lines.append(f"| {seed} | {(build.get('fingerprint') or {}).get('weights_sha256', '?')} | "
                     f"{', '.join(f'{w:.0f}' for w in words)} | {', '.join('-' if m is None else f'{m:.0f}' for m in medians)} | "
                     f"{', '.join(counts)} | "
                     f"{'yes' if rises(words) else 'no'} | {walls[seed] / 60:.1f} min |")
    answers = OmegaConf.load(REPO / "iterations" / names[0] / "config.yaml").eval.get("samples", 1)
    invocation = " ".join(["scripts/demo_builds.py", "--seeds", a.seeds, "--iterations", str(a.iterations),
                           *a.overrides])
    text = (f"# The demo across tiny-model builds ({day}, commit {commit})\n\n"
            f"Command: `.venv/bin/python {invocation}`, on {os.cpu_count()} cores; each run is `make run`'s "
            f"command with `model.build.seed=S` (its time includes building the model when it was not "
            f"cached). Held-out set: `{BENCH}` (90 of our own instructions, 50-800 words), each answered "
            f"{answers} times (`eval.samples`); the counts are of all {90 * answers} answers.\n\n"
            + "\n".join(lines) + f"\n\n![the builds' curves]({png.name})\n")
    md = out / f"{day}-tiny-builds-{commit}.md"
    md.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {md.relative_to(REPO)} and {png.relative_to(REPO)}")


if __name__ == "__main__":
    main()
