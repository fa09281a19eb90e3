"""The judge's engine and sampling, from the `judge` group: the eval and dpo verbs and the
loop's in-run evaluation open the judge through here (what the judge is asked and how its
answer is read: rubrics.py)."""
from __future__ import annotations

from contextlib import asynccontextmanager

from selflengthen.config import schema
from selflengthen.engines import Sampling
from selflengthen.engines.factory import serving


@asynccontextmanager
async def judge_engine(judge: schema.Judge, model: schema.Model, engine: schema.Engine, ray_settings: schema.Ray):
    """The judge's engine (None when `judge=none`), opened like any engine: `judge=openai`
    is its own engine config; `judge=vllm` is the run's vLLM engine config serving the
    judge's model (`model` gives the rest of what serving reads)."""
    if isinstance(judge, schema.NoJudge):
        yield None
        return
    served = model.model_copy(update={"name": "judge", "path": judge.model, "end_of_turn": judge.end_of_turn})
    if isinstance(judge, schema.VllmJudge):
        served = served.model_copy(update={"max_model_len": judge.max_model_len, "dtype": judge.dtype,
                                           "trust_remote_code": judge.trust_remote_code})
        shared = {k: v for k, v in engine.model_dump().items() if k in schema.VllmEngine.model_fields}
        engine = schema.VllmEngine.model_validate({"seed": 0, "max_lora_rank": 16, **shared, "kind": "vllm"})
    else:
        engine = judge
    async with serving(judge.model, {}, served, engine, ray_settings) as opened:
        yield opened


def judge_settings(j: schema.VllmJudge | schema.OpenaiJudge) -> tuple[Sampling, int, dict]:
    """(the judge's sampling, its retries per item, what the summaries record of it)."""
    meta = {"kind": j.kind, "model": j.model, "segments": j.segments,
            "price_per_million_tokens": j.price_per_million_tokens.model_dump()}
    return Sampling(temperature=j.temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                    max_tokens=j.max_tokens), j.retries, meta
