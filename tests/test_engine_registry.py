"""Adding an engine is one module and one registry line: every kind the settings accept has
exactly one entry, each entry names code that exists, and the openai kind carries only its
own keys (a server elsewhere owns replicas, GPUs and LoRA slots)."""
from __future__ import annotations

import inspect
import typing

import pytest

from selflengthen import preflight
from selflengthen.config import schema
from selflengthen.engines import registry


def kinds_in_settings() -> set[str]:
    union = typing.get_args(schema.Engine)[0]
    return {typing.get_args(member.model_fields["kind"].annotation)[0] for member in typing.get_args(union)}


def test_every_kind_has_one_entry_and_each_entry_loads():
    assert set(registry.KINDS) == kinds_in_settings()
    for name, kind in registry.KINDS.items():
        assert (kind.replica is None) != (kind.client is None), name  # one way of serving each
        target = registry.load(kind.replica or kind.client)
        if kind.replica:
            params = list(inspect.signature(target.__init__).parameters)[1:6]
            assert params == ["model_path", "adapters", "options", "end_of_turn", "per_request_seeds"], name
        else:
            assert inspect.isfunction(target) and "engine" in inspect.signature(target).parameters, name


def test_the_openai_engine_has_only_its_own_keys(compose_config):
    cfg = compose_config("engine=openai")
    assert preflight.problems(cfg) == []
    for vllm_only in ("replicas", "tensor_parallel_size", "max_lora_rank", "seed", "num_cpus_per_replica"):
        assert vllm_only not in cfg.engine, vllm_only
        found = preflight.problems(compose_config("engine=openai", f"+engine.{vllm_only}=1"))
        assert found == [schema.unknown_key(f"engine.{vllm_only}")], found


@pytest.mark.parametrize("kind", ["vllm", "transformers"])
def test_replica_kinds_keep_their_placement_keys(compose_config, kind):
    settings = preflight.settings(compose_config(f"engine={kind}" if kind == "vllm" else "engine=transformers"), "run")
    assert settings.engine.kind == kind and settings.engine.max_lora_rank >= settings.train.rank
