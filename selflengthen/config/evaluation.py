"""Evaluation and judges: the keys that choose a benchmark's items (`Questions`, shared by
eval.* and the eval and dpo verbs), eval.* (the loop's in-run evaluation) and judge.* (one
settings type per kind, members of the `Judge` union)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from selflengthen.config.group import Group, Language, eg
from selflengthen.config.serving import Dtype, OpenaiEngine


class Questions(Group):
    """Which of a benchmark's items are asked, and how long an answer may be."""
    data: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", None, ge=1)
    languages: Optional[list[Language]] = eg("[en]", None)
    max_tokens: Optional[int] = eg("null (the benchmark's own)", None, ge=1)


class Eval(Questions):
    """eval.*: the loop's evaluation of each iteration (evaluation/in_run.py)."""
    every_iteration: bool = eg("false", False)
    benchmarks: list[str] = ["longbench_write_en"]
    samples: int = eg("4", 1, ge=1)


class Prices(Group):
    prompt: Optional[float] = eg("null (no cost estimate)", None, ge=0)
    completion: Optional[float] = eg("null (no cost estimate)", None, ge=0)


class NoJudge(Group):
    """judge=none: no judge (quality is not scored)."""
    kind: Literal["none"] = "none"


class Judging(Group):
    """How a judge scores: the keys every judge kind shares."""
    retries: int = eg("3", 3, ge=0)
    temperature: float = eg("0.5", 0.5, ge=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    segments: int = eg("4 (0: no part-by-part scores)", 4, ge=0)  # each response judged in this many parts too
    price_per_million_tokens: Prices = Prices()


class VllmJudge(Judging):
    """judge=vllm (conf/judge/vllm.yaml): a judge model on its own vLLM engine."""
    kind: Literal["vllm"] = "vllm"
    model: str = eg("/models/Qwen2.5-72B-Instruct", min_length=1)
    max_model_len: int = eg("32768", 32768, ge=16)
    dtype: Dtype = eg("auto", "auto")
    end_of_turn: list[str] = ["<|im_end|>", "<|eot_id|>", "<|endoftext|>"]
    trust_remote_code: bool = eg("false", False)


class OpenaiJudge(Judging, OpenaiEngine):
    """judge=openai (conf/judge/openai.yaml): a judge behind an OpenAI-compatible server,
    reached as engine=openai is (its keys, with these defaults)."""
    model: str = eg("gpt-4o", min_length=1)
    max_concurrency: int = eg("32", 32, ge=1)
    send_extra_sampling: bool = eg("false", False)
    per_request_seeds: bool = eg("false", False)
    end_of_turn: list[str] = []


Judge = Annotated[Union[NoJudge, VllmJudge, OpenaiJudge], Field(discriminator="kind")]
