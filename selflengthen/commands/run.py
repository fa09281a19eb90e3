"""`python -m selflengthen run`: the Self-Lengthen loop (it resumes where a run stopped), then
the run's per-iteration length table and plot. The only verb that imports the loop; cli.py
names a sweep's jobs before handing each one here."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from selflengthen import preflight
from selflengthen.commands.inspect import inspect_runs
from selflengthen.evaluation import in_run
from selflengthen.pipeline import loop


def run_and_report(cfg: DictConfig) -> tuple[str, Path | None]:
    """Run (or resume) the loop; the length table of the run and its plot (None without one)."""
    settings = preflight.settings(cfg, "run", in_run.CONFIG_CHECK)  # every problem at once, before any work
    paths = loop.run(settings)
    return inspect_runs([str(paths.root)], Path(settings.paths.iterations_dir))


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py): run, then print the table and the plot's path."""
    text, png = run_and_report(cfg)
    print(text)
    if png:
        print(f"plot: {png}")
