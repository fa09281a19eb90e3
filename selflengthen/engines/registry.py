"""Which code serves each `engine.kind`: one line per kind. An engine is one module; a kind
that runs in Ray replicas names its engine class (built inside each replica's actor), a
kind that talks to a server elsewhere names the async context manager that opens it.
Entries are import paths, so a kind's heavy packages (vLLM, torch, the openai client) load
only when that kind is used. Its settings type lives with the others (config/schema.py,
a member of the `Engine` union)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """`replica`: "module:Class" run inside each replica's actor (engines/replicas.py);
    `client`: "module:function", an async context manager opening an engine elsewhere."""
    replica: str | None = None
    client: str | None = None


KINDS: dict[str, Kind] = {
    "vllm": Kind(replica="selflengthen.engines.vllm_engine:VllmEngine"),
    "transformers": Kind(replica="selflengthen.engines.transformers_engine:TransformersEngine"),
    "openai": Kind(client="selflengthen.engines.openai_engine:opened"),
}


def load(path: str):
    """The object a "module:name" entry names (its module imported now)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
