"""The `rl` verb's default training prompts for the embedded tiny model
(selflengthen/training/rl_prompts_tiny.jsonl): writing instructions about standard-library
modules, each asking for a length ("in about 200 words", "in 300-390 words"), from our own
templates. No module named in a held-out prompt (evaluation/heldout_tiny.jsonl) is used, so
the held-out set stays held out.

    .venv/bin/python scripts/rl_tiny_prompts.py [--count 400] [--seed 7] [--out FILE]
    .venv/bin/python scripts/rl_tiny_prompts.py --rows --seed 8 --count 100 --out FILE   # rows, for `dpo data=FILE`

`--rows` writes LongBench-Write rows {prompt, type, length} (the format `dpo` and `eval` read;
a range "in N-M words" states its middle as the length) instead of {prompt}.
"""
from __future__ import annotations

import argparse
import json
import pkgutil
import random
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = {"Write a detailed explanation of the {t} module in about {n} words.": "Explanation",
         "Describe the {t} module, with its uses and caveats, in roughly {n} words.": "Reference",
         "Write a guide to the {t} module for a new programmer. Use about {n} words.": "Guide",
         "Explain the {t} module thoroughly in around {n} words.": "Explanation",
         "Compose a short report on the {t} module in {n}-{m} words.": "Report"}
LENGTHS = (100, 150, 200, 300, 400)


def modules(held_out: str) -> list[str]:
    """Standard-library module names not mentioned in the held-out prompts (tests left out)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    names = sorted(m.name for m in pkgutil.iter_modules([stdlib]) if not m.name.startswith("_"))
    return [m for m in names if f" {m} " not in held_out and "test" not in m][:200]


def rows(count: int, seed: int) -> list[dict]:
    """{prompt, type, length} rows: the template's kind as the type, the words asked as the
    length (a range's middle)."""
    held = [json.loads(line)["prompt"] for line in
            (REPO / "selflengthen" / "evaluation" / "heldout_tiny.jsonl").read_text(encoding="utf-8").splitlines()]
    names, rng, templates = modules(" ".join(held)), random.Random(seed), list(TASKS)
    out = []
    for _ in range(count):
        n = rng.choice(LENGTHS)
        task = rng.choice(templates)
        m = int(n * 1.3)
        out.append({"prompt": task.format(t=rng.choice(names), n=n, m=m), "type": TASKS[task],
                    "length": (n + m) // 2 if "{m}" in task else n})
    assert not {r["prompt"] for r in out} & set(held)
    return out


def prompts(count: int, seed: int) -> list[str]:
    return [r["prompt"] for r in rows(count, seed)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rows", action="store_true", help="write {prompt, type, length} rows (for `dpo data=`)")
    p.add_argument("--out", default=str(REPO / "selflengthen" / "training" / "rl_prompts_tiny.jsonl"))
    a = p.parse_args()
    made = rows(a.count, a.seed)
    lines = "".join(json.dumps(r if a.rows else {"prompt": r["prompt"]}) + "\n" for r in made)
    Path(a.out).write_text(lines, encoding="utf-8")


if __name__ == "__main__":
    main()
