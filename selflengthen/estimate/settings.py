"""The estimate's inputs, read from its typed settings (schema.EstimateConfig, built by
preflight.settings with CONFIG_CHECK, the estimate's one rule beside the types): the loop's
sizes as a `tokens.Shape`, the assumptions as `tokens.Assumptions`, and the training
placement (train.workers / strategy / cpu_offload, with their defaults when a config
predates them)."""
from __future__ import annotations

from selflengthen.config import schema
from selflengthen.config.features import FeatureCheck
from selflengthen.core import prompting
from selflengthen.core.text import count_words
from selflengthen.estimate.rl import RlShape
from selflengthen.estimate.tokens import Assumptions, Shape

TEMPLATES = ("augment", "judge", "extend", "list_item")


def language_problems(est: schema.Estimate, model: schema.Model) -> list[str]:
    """A words-to-tokens ratio for each of the model's languages."""
    return [f"estimate.tokens_per_word has no value for language {lang!r}; add estimate.tokens_per_word.{lang}=1.3"
            for lang in model.languages if lang not in est.tokens_per_word]


CONFIG_CHECK = FeatureCheck(("estimate", "model"), language_problems)  # preflight.settings(cfg, "estimate", ...)


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


def rl_shape(settings: schema.EstimateConfig) -> RlShape:
    """rl.train's sizes, train.workers, and a prompt's tokens (estimate.instruction_words in
    the model's first language, with the chat template's)."""
    rt, est = settings.rl.train, settings.estimate
    lang = settings.model.languages[0]
    return RlShape(steps=rt.steps, prompts_per_step=rt.prompts_per_step, num_generations=rt.num_generations,
                   max_completion_length=rt.max_completion_length, workers=settings.train.workers,
                   accumulation=rt.accumulation,
                   prompt_tokens=est.chat_overhead_tokens + est.tokens_per_word[lang] * est.instruction_words)
