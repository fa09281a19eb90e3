"""A run's saved config.yaml read back as typed settings: the method it was started with."""
from __future__ import annotations

from pydantic import ValidationError

from selflengthen.config import schema
from selflengthen.core.errors import UserError


def saved_method(saved: dict, where: str) -> schema.Method:
    """The method of a run's saved config.yaml (keys added since take their defaults), or a
    UserError naming what no longer fits."""
    try:
        return schema.Method.of(saved)
    except ValidationError as err:
        found = [line for _, line in schema._lines(err.errors(include_url=False), "", schema.Method)]
        raise UserError(f"{where} does not fit this version's settings: {'; '.join(found)}") from err
