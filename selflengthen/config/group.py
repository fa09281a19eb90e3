"""How a config group is declared: `Group` (strict types, every key declared, frozen), `eg`
(a field's example of a valid override and its default), the languages a key may name, and
`from_node` (a typed slice of a composed node, for code that still holds one)."""
from __future__ import annotations

from typing import Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticUndefined

from selflengthen.core.prompting import LANGUAGES  # the languages with prompt templates (selflengthen/prompts/)


def eg(example: str, default: object = PydanticUndefined, **constraints) -> object:
    """A constrained field with an example of a valid override (shown in the fix) and its
    default: conf/'s value, which fills the key in a config saved before the key existed."""
    return Field(default, json_schema_extra={"eg": example}, **constraints)


Language = Literal[LANGUAGES]


class Group(BaseModel):
    """A config group: strict types, every key declared (an unknown key is refused), frozen."""
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def from_node(cls, node):
    """A typed slice (a Group, or a union such as Engine) of a composed DictConfig node, for
    code that still holds the node: the verbs build their whole settings once at entry
    instead (preflight.settings)."""
    return TypeAdapter(cls).validate_python(OmegaConf.to_container(node, resolve=True))
