"""`python -m selflengthen run`: the Self-Lengthen loop (it resumes where a run stopped), then
the run's per-iteration length table and plot. The only verb that imports the loop; cli.py
names a sweep's jobs before handing each one here."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from selflengthen.commands.inspect import inspect_runs
from selflengthen.pipeline import loop


def run_and_report(cfg: DictConfig) -> tuple[str, Path | None]:
    """Run (or resume) the loop; the length table of the run and its plot (None without one)."""
    paths = loop.run(cfg)
    return inspect_runs([str(paths.root)], Path(str(cfg.paths.iterations_dir)))
