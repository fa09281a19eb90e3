"""A run's saved config.yaml read back: as a plain dict (`saved_config`) and as typed
settings, the method it was started with (`saved_method`)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from pydantic import ValidationError

import selflengthen.config.schema as schema
from selflengthen.core.errors import UserError


def saved_config(path: Path) -> dict:
    """A run's saved config.yaml as a plain dict (its interpolations resolved)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def saved_method(saved: dict, where: str) -> schema.Method:
    """The method of a run's saved config.yaml (keys added since take their defaults), or a
    UserError naming what no longer fits."""
    try:
        return schema.Method.of(saved)
    except ValidationError as err:
        found = [line for _, line in schema._lines(err.errors(include_url=False), "", schema.Method)]
        raise UserError(f"{where} does not fit this version's settings: {'; '.join(found)}") from err
