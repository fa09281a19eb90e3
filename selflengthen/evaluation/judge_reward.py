"""The judge as an RL quality reward (`rl.rewards.quality=judge`, issue 40): each answer is
rated by the evaluation's own judge and rubric (rubrics.judge_messages, runner.ask_judge) and
its quality mapped to 0..1. The judge is a served model behind an OpenAI-compatible endpoint
(`judge=openai`: a `vllm serve` of a 7B-72B judge on its own GPUs, or a hosted API), so the
trainer's devices stay the policy's.

`JudgeReward` is built by the `rl` verb and handed to the trainer (training/grpo.py, a Ray
task) inside its settings: it is a plain picklable object that opens its client in the
process that calls it. It is a TRL reward function (called with prompts and completions,
named "quality" so TRL logs rewards/quality/mean); an answer whose judgement never parses
scores None, which TRL leaves out of the sum (NaN) rather than counting as zero. The share of a
step's answers whose judgement parsed is logged as quality/judged; a step where none did (a judge
that does not answer in the rubric's format) is said once in a warning naming the judge.
"""
from __future__ import annotations

import asyncio
import logging

from selflengthen.config import schema
from selflengthen.core.text import detect_language
from selflengthen.engines.base import Sampling
from selflengthen.engines.openai_engine import OpenAIEngine
from selflengthen.evaluation import rubrics
from selflengthen.evaluation.runner import ask_judge

log = logging.getLogger("selflengthen")


def message_text(message) -> str:
    """The text of a prompt or completion as TRL passes it: a string or chat messages (the
    last user turn of a prompt, the assistant's content of a completion)."""
    if isinstance(message, list):
        users = [m.get("content", "") for m in message if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else "".join(m.get("content", "") for m in message if isinstance(m, dict))
    return str(message)


def unit_quality(rubric: str, scores: dict[str, float]) -> float:
    """The rubric's quality on 0..1: percent rubrics (0..100) divided by 100, others mapped
    from their low..high."""
    r = rubrics.get_rubric(rubric)
    q = r.quality(scores)
    return q / 100.0 if r.percent else (q - r.low) / (r.high - r.low)


class JudgeReward:
    """A TRL reward function asking the served judge to rate each answer with `rubric`."""

    __name__ = "quality"

    def __init__(self, judge: dict, rubric: str, seed: int = 0):
        self.judge = dict(judge)  # schema.OpenaiJudge as a plain dict (picklable, no client)
        self.rubric = rubric
        self.seed = seed
        self.calls = 0
        self.warned = False
        rubrics.get_rubric(rubric)  # an unknown rubric fails here, in the verb, not in the trainer

    def settings(self) -> schema.OpenaiJudge:
        return schema.OpenaiJudge.model_validate(self.judge)

    def __call__(self, prompts, completions, completion_ids=None, language=None, log_metric=None,
                 **_) -> list[float | None]:
        self.calls += 1
        texts = [message_text(c) for c in completions]
        asked = [message_text(p) for p in prompts]
        langs = language or [detect_language(t) for t in asked]
        scores = asyncio.run(self.rate(asked, texts, langs))
        judged = sum(s is not None for s in scores)
        if log_metric:
            log_metric("quality/judged", judged / max(1, len(scores)))
        if scores and not judged and not self.warned:
            self.warned = True
            log.warning("rl: the judge %s answered none of this step's %d ratings in the %s rubric's format, so "
                        "the quality reward is left out while that lasts; serve a judge that follows it (7B or larger) "
                        "or raise judge.max_tokens", self.judge.get("model"), len(scores), self.rubric)
        return scores

    async def rate(self, asked: list[str], texts: list[str], langs: list[str]) -> list[float | None]:
        j = self.settings()
        sampling = Sampling(temperature=j.temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                            max_tokens=j.max_tokens)
        engine = OpenAIEngine.from_config(j, j.model, {}, list(j.end_of_turn))
        async with engine:
            async def one(i: int) -> float | None:
                messages = rubrics.judge_messages(self.rubric, asked[i], texts[i], langs[i])
                scores, _ = await ask_judge(engine, self.rubric, messages, sampling, j.retries, key=f"rl-{i}",
                                            seed_parts=("rl-quality", self.seed, self.calls, i))
                return unit_quality(self.rubric, scores) if scores is not None else None
            return list(await asyncio.gather(*(one(i) for i in range(len(texts)))))
