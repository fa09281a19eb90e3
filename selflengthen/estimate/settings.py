"""The estimate's inputs, read from the composed config: the `estimate.*` keys (typed and
range-checked by schema.py's EstimateConfig), the loop's sizes as a
`tokens.Shape`, the assumptions as `tokens.Assumptions`, and the training placement
(train.workers / strategy / cpu_offload, with their defaults when a config predates them)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from selflengthen.config import schema
from selflengthen.core import prompting
from selflengthen.core.errors import UserError
from selflengthen.core.text import count_words
from selflengthen.estimate.tokens import Assumptions, Shape

TEMPLATES = ("augment", "judge", "extend", "list_item")


def problems(container: dict) -> list[str]:
    """One line per bad value: the run's keys (schema.py) and the estimate's."""
    out = schema.problems(container, "estimate")
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
