"""Evaluation and judges: eval.* (the loop's in-run evaluation) and judge.* (one settings
type per kind, members of the `Judge` union)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from selflengthen.config.group import Group, Language, eg
from selflengthen.config.serving import Dtype


class Eval(Group):
    every_iteration: bool = eg("false", False)
    benchmarks: list[str] = ["longbench_write_en"]
    data: Optional[str] = None
    limit: Optional[int] = eg("6", None, ge=1)
    languages: Optional[list[Language]] = None
    max_tokens: Optional[int] = eg("null", None, ge=1)
    samples: int = eg("4", 1, ge=1)


class Prices(Group):
    prompt: Optional[float] = eg("null (no cost estimate)", None, ge=0)
    completion: Optional[float] = eg("null (no cost estimate)", None, ge=0)


class NoJudge(Group):
    """judge=none: no judge (quality is not scored)."""
    kind: Literal["none"] = "none"


class VllmJudge(Group):
    """judge=vllm (conf/judge/vllm.yaml): a judge model on its own vLLM engine."""
    kind: Literal["vllm"] = "vllm"
    model: str = eg("/models/Qwen2.5-72B-Instruct", min_length=1)
    max_model_len: int = eg("32768", 32768, ge=16)
    dtype: Dtype = eg("auto", "auto")
    end_of_turn: list[str] = ["<|im_end|>", "<|eot_id|>", "<|endoftext|>"]
    trust_remote_code: bool = eg("false", False)
    retries: int = eg("3", 3, ge=0)
    temperature: float = eg("0.5", 0.5, ge=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    segments: int = eg("4 (0: no part-by-part scores)", 4, ge=0)  # each response judged in this many parts too
    price_per_million_tokens: Prices = Prices()


class OpenaiJudge(Group):
    """judge=openai (conf/judge/openai.yaml): a judge behind an OpenAI-compatible server."""
    kind: Literal["openai"] = "openai"
    base_url: str = eg("http://127.0.0.1:8000/v1", min_length=1)
    model: str = eg("gpt-4o", min_length=1)
    tokenizer: Optional[str] = None
    api_key_env: str = eg("OPENAI_API_KEY", "OPENAI_API_KEY", min_length=1)
    adapter_models: dict[str, Optional[str]] = {}
    max_concurrency: int = eg("32", 32, ge=1)
    timeout: float = eg("600", 600, gt=0)
    max_retries: int = eg("5", 5, ge=0)
    send_extra_sampling: bool = eg("false", False)
    load_adapters: bool = eg("false", False)
    ready_timeout: float = eg("120", 120, gt=0)
    per_request_seeds: bool = eg("false", False)
    end_of_turn: list[str] = []
    retries: int = eg("3", 3, ge=0)
    temperature: float = eg("0.5", 0.5, ge=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    segments: int = eg("4 (0: no part-by-part scores)", 4, ge=0)  # each response judged in this many parts too
    price_per_million_tokens: Prices = Prices()


Judge = Annotated[Union[NoJudge, VllmJudge, OpenaiJudge], Field(discriminator="kind")]
