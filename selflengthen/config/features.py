"""A feature's own config rules, handed to the up-front checks (preflight/) by the command
that runs the feature: the config layer names the shape and imports no feature."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig


@dataclass(frozen=True)
class FeatureCheck:
    """A feature's rules over its own keys, run by problems() when those keys have no type
    problem; the command that runs the feature passes it (the loop: in_run.CONFIG_CHECK)."""
    keys: tuple[str, ...]
    problems: Callable[[DictConfig], list[str]]
