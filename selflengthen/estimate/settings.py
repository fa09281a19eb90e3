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


def validate(cfg: DictConfig) -> schema.EstimateConfig:
    """The verb's typed settings, or a UserError naming every problem."""
    container = OmegaConf.to_container(cfg, resolve=True)
    found = problems(container)
    if len(found) == 1:
        raise UserError(f"config: {found[0]}")
    if found:
        raise UserError("config has %d problems:\n  - %s" % (len(found), "\n  - ".join(found)))
    return schema.EstimateConfig.model_validate(container)


def train_placement(train: schema.Train) -> dict:
    """train.workers, strategy, cpu_offload and num_gpus, as the estimate reports them."""
    return {"workers": train.workers, "strategy": train.strategy, "cpu_offload": train.cpu_offload,
            "num_gpus": float(train.num_gpus)}


def template_words(languages: list[str]) -> dict[str, dict[str, int]]:
    """Words of our prompt templates (selflengthen/prompts/), per language."""
    return {lang: {name: count_words(prompting.load_template(lang, name)) for name in TEMPLATES}
            for lang in languages}


def shape(settings: schema.EstimateConfig) -> Shape:
    """The loop's sizes the arithmetic needs."""
    loop, train, model = settings.loop, settings.train, settings.model
    return Shape(languages=tuple(model.languages), new_per_language=loop.augment.new_per_language,
                 augment_tries=loop.augment.tries, augment_max_tokens=loop.augment.max_tokens,
                 judge_max_tokens=loop.augment.judge_max_tokens, samples=loop.generate.samples,
                 generate_retries=loop.generate.retries, generate_drop_short=loop.generate.drop_short,
                 attempts=loop.extend.attempts, extend_retries=loop.extend.retries,
                 rounds=loop.extend.rounds, extend_drop_short=loop.extend.drop_short,
                 max_tokens=loop.sampling.max_tokens, max_model_len=model.max_model_len,
                 line_keep_prob=loop.curate.line_keep_prob, epochs=train.epochs,
                 train_max_length=train.max_length, iterations=settings.iterations,
                 template_words=template_words(list(model.languages)))


def assumptions(est: schema.Estimate) -> Assumptions:
    """The estimate.* keys that describe what the model does."""
    return Assumptions(**{k: getattr(est, k) for k in Assumptions.__dataclass_fields__})
