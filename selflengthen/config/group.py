"""How a config group is declared: `Group` (strict types, every key declared, frozen), `eg`
(a field's example of a valid override and its default), the languages a key may name,
`typed_slice` (one key of a verb's config, typed) and `from_node` (a typed slice of a
composed node, for the scripts that still hold one)."""
from __future__ import annotations

from typing import Annotated, Literal

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


def typed_slice(root: type[BaseModel], container: dict, key: str) -> object:
    """The typed value of one top-level key of a verb's config (a plain dict) as `root`
    declares it (the key's default where the config leaves it out), for a check of one
    group whose types are right while other keys may not be."""
    field = root.model_fields[key]
    kind = field.annotation if field.discriminator is None else \
        Annotated[field.annotation, Field(discriminator=field.discriminator)]
    value = container[key] if key in container else field.get_default(call_default_factory=True)
    return TypeAdapter(kind).validate_python(value)


def from_node(cls, node):
    """A typed slice (a Group, or a union such as Engine) of a composed DictConfig node, for
    code that still holds the node: the verbs build their whole settings once at entry
    instead (preflight.settings)."""
    return TypeAdapter(cls).validate_python(OmegaConf.to_container(node, resolve=True))
