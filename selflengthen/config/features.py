"""A feature's own config rules, handed to the up-front checks (preflight/) by the command
that runs the feature: the config layer names the shape and imports no feature."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FeatureCheck:
    """A feature's rules over its own top-level keys, run by preflight's problems() when those
    keys have no type problem, with each key's typed value in the order of `keys` (the loop:
    in_run.CONFIG_CHECK, problems(eval, judge)); the command that runs the feature passes it."""
    keys: tuple[str, ...]
    problems: Callable[..., list[str]]
