"""The estimate's inputs, read from the composed config: the `estimate.*` keys (typed and
range-checked here, like schema.py does for the run's keys), the loop's sizes as a
`tokens.Shape`, the assumptions as `tokens.Assumptions`, and the training placement
(train.workers / strategy / cpu_offload, with their defaults when a config predates them)."""
from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

from selflengthen.config import schema
from selflengthen.core import prompting
from selflengthen.core.errors import UserError
from selflengthen.core.text import count_words
from selflengthen.estimate.tokens import Assumptions, Shape

TEMPLATES = ("augment", "judge", "extend", "list_item")


class Estimate(schema.Group):
    initial_words: float = schema.eg("1000", gt=0)
    growth_per_round: float = schema.eg("1.26", gt=0)
    carryover: float = schema.eg("1.0", gt=0)
    instruction_words: float = schema.eg("40", gt=0)
    tokens_per_word: dict[str, float]
    chat_overhead_tokens: float = schema.eg("30", ge=0)
    augment_pass_rate: float = schema.eg("0.9", gt=0, le=1)
    judge_yes_rate: float = schema.eg("0.8", gt=0, le=1)
    generate_pass_rate: float = schema.eg("0.8", gt=0, le=1)
    extend_accept_rate: float = schema.eg("0.6", gt=0, le=1)
    tokens_per_s_per_gpu: Optional[float] = schema.eg("3000", gt=0)
    from_run: Optional[str] = None
    train_tokens_per_s_per_gpu: Optional[float] = schema.eg("5000", gt=0)
    gpu_tflops: float = schema.eg("989 (H100 bf16)", gt=0)
    mfu: float = schema.eg("0.35", gt=0, le=1)
    gpus: int = schema.eg("8", ge=1)
    gpu_memory_gib: float = schema.eg("80", gt=0)
    concurrent_sequences: int = schema.eg("32", ge=1)
    overhead_gib: float = schema.eg("2", ge=0)
    out: Optional[str] = None


def problems(container: dict) -> list[str]:
    """One line per bad value: the run's keys (schema.py) and the estimate's."""
    out = [line for key, line in schema.check(container)]
    try:
        Estimate.model_validate(container.get("estimate") or {})
    except ValidationError as err:
        out += [line for _, line in schema._lines(err.errors(include_url=False), "estimate.", Estimate)]
    est = container.get("estimate") or {}
    langs = (container.get("model") or {}).get("languages") or []
    per_word = est.get("tokens_per_word") if isinstance(est.get("tokens_per_word"), dict) else {}
    for lang in langs:
        if lang not in per_word:
            out.append(f"estimate.tokens_per_word has no value for language {lang!r}; add "
                       f"estimate.tokens_per_word.{lang}=1.3")
    return out


def validate(cfg: DictConfig) -> dict:
    """The resolved config as a plain dict, or a UserError naming every problem."""
    container = OmegaConf.to_container(cfg, resolve=True)
    found = problems(container)
    if len(found) == 1:
        raise UserError(f"config: {found[0]}")
    if found:
        raise UserError("config has %d problems:\n  - %s" % (len(found), "\n  - ".join(found)))
    return container


def train_placement(train: dict) -> dict:
    """train.workers, strategy and cpu_offload (as a config saved before they existed ran:
    1, ddp, false) and num_gpus."""
    return {"workers": int(train.get("workers") or 1), "strategy": str(train.get("strategy") or "ddp"),
            "cpu_offload": bool(train.get("cpu_offload") or False), "num_gpus": float(train.get("num_gpus", 1))}


def template_words(languages: list[str]) -> dict[str, dict[str, int]]:
    """Words of our prompt templates (selflengthen/prompts/), per language."""
    return {lang: {name: count_words(prompting.load_template(lang, name)) for name in TEMPLATES}
            for lang in languages}


def shape(c: dict) -> Shape:
    loop, train = c["loop"], c["train"]
    return Shape(languages=tuple(c["model"]["languages"]), new_per_language=loop["augment"]["new_per_language"],
                 augment_tries=loop["augment"]["tries"], augment_max_tokens=loop["augment"]["max_tokens"],
                 judge_max_tokens=loop["augment"]["judge_max_tokens"], samples=loop["generate"]["samples"],
                 generate_retries=loop["generate"]["retries"], generate_drop_short=loop["generate"]["drop_short"],
                 attempts=loop["extend"]["attempts"], extend_retries=loop["extend"]["retries"],
                 rounds=loop["extend"]["rounds"], extend_drop_short=loop["extend"]["drop_short"],
                 max_tokens=loop["sampling"]["max_tokens"], max_model_len=c["model"]["max_model_len"],
                 line_keep_prob=loop["curate"]["line_keep_prob"], epochs=train["epochs"],
                 train_max_length=train["max_length"], iterations=c["iterations"],
                 template_words=template_words(list(c["model"]["languages"])))


def assumptions(est: dict) -> Assumptions:
    keys = Assumptions.__dataclass_fields__
    return Assumptions(**{k: (dict(v) if isinstance(v, dict) else float(v)) for k, v in est.items() if k in keys})
