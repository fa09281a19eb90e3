"""The judge's engine and sampling, from the `judge` group: the eval and dpo verbs and the
loop's in-run evaluation open the judge through here."""
from __future__ import annotations

from contextlib import asynccontextmanager

from omegaconf import DictConfig, OmegaConf

from selflengthen.config import schema
from selflengthen.engines import Sampling
from selflengthen.engines.factory import serving


@asynccontextmanager
async def judge_engine(cfg: DictConfig):
    """The judge's engine (None when `judge=none`), opened like any engine: `judge=openai`
    is its own engine config; `judge=vllm` is the run's vLLM engine config serving the
    judge's model."""
    judge = schema.from_node(schema.Judge, cfg.judge)
    if judge.kind == "none":
        yield None
        return
    model, engine, ray_settings = schema.engine_slices(cfg)
    served = model.model_copy(update={"name": "judge", "path": judge.model, "end_of_turn": judge.end_of_turn})
    if judge.kind == "vllm":
        served = served.model_copy(update={"max_model_len": judge.max_model_len, "dtype": judge.dtype,
                                           "trust_remote_code": judge.trust_remote_code})
        engine = schema.VllmEngine.model_validate(
            {**{k: v for k, v in engine.model_dump().items() if k in schema.VllmEngine.model_fields}, "kind": "vllm"})
    else:
        engine = judge
    async with serving(judge.model, {}, served, engine, ray_settings) as opened:
        yield opened


def judge_settings(cfg: DictConfig) -> tuple[Sampling, int, dict]:
    j = cfg.judge
    meta = {"kind": str(j.kind), "model": str(j.model)}
    meta["price_per_million_tokens"] = OmegaConf.to_container(j.price_per_million_tokens, resolve=True)
    return Sampling(temperature=float(j.temperature), top_p=1.0, top_k=-1, repetition_penalty=1.0,
                    max_tokens=int(j.max_tokens)), int(j.retries), meta
