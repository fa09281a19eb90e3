"""Build the embedded tiny model's default recipe from scratch and ship it: the result is
copied into selflengthen/models/tiny_build/ (package data), which every machine then
installs on first use instead of building its own (builds differ between CPUs). Run it
whenever the recipe, the corpus or a prompt template it learns changes (the suite's
test_the_shipped_build_is_the_default_recipes fails until you do), then commit the folder.

    .venv/bin/python scripts/build_tiny_model.py [--seed 0]

About 5-6 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selflengthen.models.tiny_model import SHIPPED_BUILD, TinyRecipe, build  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=TinyRecipe().seed)
    a = p.parse_args()
    recipe = replace(TinyRecipe(), seed=a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "build"
        out.mkdir()
        info = build(recipe, out)
        (out / "build.json").write_text(__import__("json").dumps(info, indent=2))
        shutil.rmtree(SHIPPED_BUILD, ignore_errors=True)
        shutil.copytree(out, SHIPPED_BUILD)
    print(f"shipped recipe {info['key']} (weights {info['fingerprint']['weights_sha256']}, loss "
          f"{info['final_loss']:.2f}) in {SHIPPED_BUILD.relative_to(REPO)}")


if __name__ == "__main__":
    main()
