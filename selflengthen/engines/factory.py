"""Opening the configured engine (`engine.kind`, engines/registry.py): vLLM or transformers
replicas on Ray, or the client of an OpenAI-compatible server that runs elsewhere. Every
kind implements the same per-request contract (engines/base.py), so every stage runs on each."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import ray

from selflengthen.config import schema
from selflengthen.core import precision
from selflengthen.core.errors import UserError
from selflengthen.engines import registry, workers
from selflengthen.engines.base import Engine, Sampling
from selflengthen.engines.merged import MergedPool, merge_adapter
from selflengthen.engines.replicas import EnginePool


@asynccontextmanager
async def serving(model_path: str, adapters: dict[str, str], model: schema.Model, engine: schema.Engine,
                  ray_settings: schema.Ray) -> AsyncIterator[Engine]:
    """The engine for one stretch of stages; shut down (accelerator memory freed) on exit."""
    kind = registry.KINDS[engine.kind]
    if kind.client:
        async with registry.load(kind.client)(model_path, adapters, model, engine, ray_settings) as client:
            yield client
        return
    async with replica_pool(model_path, adapters, model, engine, ray_settings) as pool:
        yield pool


@asynccontextmanager
async def replica_pool(model_path: str, adapters: dict[str, str], model: schema.Model, engine: schema.Engine,
                       ray_settings: schema.Ray) -> AsyncIterator[Engine]:
    """The kinds that run in Ray replicas (engines/replicas.py): one pool over the base model
    and its adapters, or, where `engine.lora_serving` merges them, one pool at a time over
    the base model or an adapter merged into it (engines/merged.py)."""
    workers.init_ray(ray_settings)  # a no-op when the caller (the loop) has connected already
    on_gpu = int(ray.cluster_resources().get("GPU", 0)) > 0
    if adapters and engine.merges_adapters(on_gpu):
        dtype = precision.serving_dtype(model.dtype, on_gpu)
        pool = MergedPool(model_path, adapters, lambda folder: open_pool(folder, {}, model, engine),
                          lambda role, out: merge_adapter(model_path, adapters[role], out, dtype,
                                                          model.trust_remote_code),  # in this process
                          reload_in_place=engine.reloads_weights(model))
    else:
        pool = open_pool(model_path, adapters, model, engine)
    try:
        yield pool
    finally:
        pool.shutdown()


def open_pool(model_path: str, adapters: dict[str, str], model: schema.Model, engine: schema.Engine) -> EnginePool:
    """The engine's Ray replicas on one model (with its adapters); a replica that cannot
    start is one line naming the settings."""
    try:
        return EnginePool(model_path, adapters, engine, model)
    except ray.exceptions.RayError as err:
        cause = str(err).strip().splitlines()
        last = next((ln for ln in reversed(cause) if ln.strip()), repr(err))
        raise UserError(f"the {engine.kind} engine could not start for {model_path}: {last.strip()[:300]} -- check "
                        f"model.path and the engine.* settings; rerun with debug=true ray.log_to_driver=true "
                        f"for its log") from err


def sampling_from(s: schema.Sampling) -> Sampling:
    """The engines' sampling from `loop.sampling`, which the verbs also generate with."""
    return Sampling(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                    repetition_penalty=s.repetition_penalty, max_tokens=s.max_tokens, stop=tuple(s.stop))
