"""The `rl` verb's default training prompts for the embedded tiny model
(selflengthen/training/rl_prompts_tiny.jsonl): writing instructions about standard-library
modules, each asking for a length ("in about 200 words", "in 300-390 words"), from our own
templates. No module named in a held-out prompt (evaluation/heldout_tiny.jsonl) is used, so
the held-out set stays held out.

    .venv/bin/python scripts/rl_tiny_prompts.py [--count 400] [--seed 7] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import pkgutil
import random
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ["Write a detailed explanation of the {t} module in about {n} words.",
         "Describe the {t} module, with its uses and caveats, in roughly {n} words.",
         "Write a guide to the {t} module for a new programmer. Use about {n} words.",
         "Explain the {t} module thoroughly in around {n} words.",
         "Compose a short report on the {t} module in {n}-{m} words."]
LENGTHS = (100, 150, 200, 300, 400)


def modules(held_out: str) -> list[str]:
    """Standard-library module names not mentioned in the held-out prompts (tests left out)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    names = sorted(m.name for m in pkgutil.iter_modules([stdlib]) if not m.name.startswith("_"))
    return [m for m in names if f" {m} " not in held_out and "test" not in m][:200]


def prompts(count: int, seed: int) -> list[str]:
    held = [json.loads(line)["prompt"] for line in
            (REPO / "selflengthen" / "evaluation" / "heldout_tiny.jsonl").read_text(encoding="utf-8").splitlines()]
    names, rng = modules(" ".join(held)), random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.choice(LENGTHS)
        out.append(rng.choice(TASKS).format(t=rng.choice(names), n=n, m=int(n * 1.3)))
    assert not set(out) & set(held)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=str(REPO / "selflengthen" / "training" / "rl_prompts_tiny.jsonl"))
    a = p.parse_args()
    lines = "".join(json.dumps({"prompt": t}) + "\n" for t in prompts(a.count, a.seed))
    Path(a.out).write_text(lines, encoding="utf-8")


if __name__ == "__main__":
    main()
