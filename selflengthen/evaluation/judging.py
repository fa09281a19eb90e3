"""The judge's engine and sampling, from the `judge` group: the eval and dpo verbs and the
loop's in-run evaluation open the judge through here."""
from __future__ import annotations

from contextlib import asynccontextmanager

from omegaconf import DictConfig, OmegaConf

from selflengthen.engines import Sampling
from selflengthen.engines.factory import serving


@asynccontextmanager
async def judge_engine(cfg: DictConfig):
    """The judge's engine (None when `judge=none`), opened like any engine: `judge=openai`
    is its own engine config; `judge=vllm` is the run's vLLM engine config serving the
    judge's model."""
    jcfg = cfg.judge
    if jcfg.kind == "none":
        yield None
        return
    engine_cfg = jcfg if jcfg.kind == "openai" else {**OmegaConf.to_container(cfg.engine, resolve=True),
                                                       "kind": "vllm"}
    model = {"max_model_len": jcfg.get("max_model_len"), "dtype": jcfg.get("dtype"),
             "trust_remote_code": jcfg.get("trust_remote_code", False), "end_of_turn": list(jcfg.end_of_turn)}
    judge_cfg = OmegaConf.create({"engine": engine_cfg, "model": model, "ray": cfg.ray})
    async with serving(str(jcfg.model), {}, judge_cfg) as engine:
        yield engine


def judge_settings(cfg: DictConfig) -> tuple[Sampling, int, dict]:
    j = cfg.judge
    meta = {"kind": str(j.kind), "model": str(j.model)}
    meta["price_per_million_tokens"] = OmegaConf.to_container(j.price_per_million_tokens, resolve=True)
    return Sampling(temperature=float(j.temperature), top_p=1.0, top_k=-1, repetition_penalty=1.0,
                    max_tokens=int(j.max_tokens)), int(j.retries), meta
