"""The loop's keys (loop.*: sampling, the stages' groups, the quality rules) and agentwrite.*,
LongWriter's plan-then-write, which the loop runs when loop.synth names it."""
from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import field_validator, model_validator

from selflengthen.config.group import Group, eg
from selflengthen.core.text import CUT_MODES, META_LINES, META_MATCHES, UNIT_MODES, QualityRules


class Decoding(Group):
    """How a model's answer is drawn: the keys loop.sampling and finalize.rewrite share."""
    temperature: float = eg("0.7", 0.7, ge=0)
    top_p: float = eg("0.8", 0.8, gt=0, le=1)
    top_k: int = eg("20 (or -1: off)", 20)
    repetition_penalty: float = eg("1.1", 1.1, gt=0)
    max_tokens: int = eg("768", 16384, ge=1)

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("must be -1 (no top-k) or >= 1")
        return v


class Sampling(Decoding):
    """loop.sampling: the loop's sampling (and every verb's that serves the run's model)."""
    stop: list[str] = ["---", "\n\n\n"]


class Augment(Group):
    new_per_language: int = eg("24", 5000, ge=1)
    tries: int = eg("10", 10, ge=1)
    min_words: int = eg("3", 3, ge=0)
    max_words: int = eg("500", 500, ge=1)
    max_tokens: int = eg("512", 512, ge=1)
    judge_max_tokens: int = eg("8", 8, ge=1)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_words >= self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be below max_words ({self.max_words})")
        return self


class Generate(Group):
    samples: int = eg("2", 2, ge=1)
    retries: int = eg("20", 20, ge=1)
    drop_short: bool = eg("true", True)


class Extend(Group):
    attempts: int = eg("2", 2, ge=1)
    retries: int = eg("20", 20, ge=1)
    rounds: int = eg("3", 3, ge=1)
    min_growth: float = eg("1.2 (the paper's value)", 1.2, ge=1.0)
    max_growth: float | None = eg("1.6 (or null: no bound, the paper's)", None, gt=1.0)
    drop_preface: bool = eg("true", False)
    drop_short: bool = eg("true", True)

    @model_validator(mode="after")
    def _growth_bounds(self):
        if self.max_growth is not None and self.max_growth <= self.min_growth:
            raise ValueError(f"max_growth ({self.max_growth}) must be above min_growth ({self.min_growth}), "
                             "or null for no bound")
        return self


class Curate(Group):
    line_keep_prob: float = eg("0.8 (the paper's value)", 0.8, gt=0, le=1)
    # Not the paper's loop (its constraints come once, after it): the share of generator rows
    # whose instruction states the response's own length (pipeline/stages/curate.py)
    length_hints: float = eg("0.5 (half the generator's rows)", 0.0, ge=0, le=1)


class Guard(Group):
    """loop.guard: flag (or stop before training on) kept data more degenerate than the
    previous iteration's (pipeline/stages/guard.py). Not part of the method: it may change
    when a run resumes."""
    check: bool = eg("true", False)
    margin: float = eg("0.1 (a 10% move of a signal, relative)", 0.1, ge=0)
    stop: bool = eg("true", False)


class QualityRule(Group):
    """loop.quality.<language>: the quality check of one language (core/text.py)."""
    terminal_marks: list[str]
    ngram: int = eg("10", ge=1)
    unit_mode: str
    meta_words: list[str]
    meta_head_lines: int = eg("2", 2, ge=0)
    meta_tail_lines: int = eg("3", 3, ge=0)
    meta_match: str = "substring"
    meta_lines: str = "raw"
    cut: str = "reference"  # the value of every run saved before the key existed
    loop_floor: float | None = eg("0.25 (or null: off, the reference's)", None, gt=0, lt=1)

    @field_validator("terminal_marks")
    @classmethod
    def _single_characters(cls, marks):
        long_marks = [m for m in marks if len(m) != 1]
        if long_marks:
            raise ValueError(f"has {long_marks}: only the text's last character is compared, so give single "
                             "characters (a text ending '...' passes through '.')")
        return marks

    @field_validator("unit_mode", "meta_match", "meta_lines", "cut")
    @classmethod
    def _a_choice(cls, value, info):
        choices = {"unit_mode": UNIT_MODES, "meta_match": META_MATCHES, "meta_lines": META_LINES,
                   "cut": CUT_MODES}[info.field_name]
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)} ({choices[0]!r} is the reference's behaviour)")
        return value

    def rules(self) -> QualityRules:
        """The check's rules for this language (meta words compared case-sensitively, as in the reference)."""
        return QualityRules(terminal_marks=tuple(self.terminal_marks), ngram=self.ngram,
                            meta_words=tuple(self.meta_words), meta_head_lines=self.meta_head_lines,
                            meta_tail_lines=self.meta_tail_lines, unit_mode=self.unit_mode,
                            meta_match=self.meta_match, meta_lines=self.meta_lines, cut=self.cut,
                            loop_floor=self.loop_floor)


Synth = Literal["extend", "agentwrite", "both"]  # loop.synth: how stage 3 makes the longer responses
SYNTHS = get_args(Synth)


class Loop(Group):
    synth: Synth = eg("extend (the paper's extender; agentwrite: LongWriter's plan-then-write; both)",
                      "extend")  # the one value a run had before loop.synth existed
    sampling: Sampling = Sampling()
    augment: Augment = Augment()
    generate: Generate = Generate()
    extend: Extend = Extend()
    curate: Curate = Curate()
    guard: Guard = Guard()
    quality: dict[str, QualityRule]

    def quality_rules(self) -> dict[str, QualityRules]:
        """loop.quality as the quality check's rules, by language."""
        return {language: rule.rules() for language, rule in self.quality.items()}


class Phase(Group):
    max_tokens: int = eg("2048", ge=1)
    temperature: Optional[float] = eg("null (the run's)", None, ge=0)
    stop: Optional[list[str]] = None
    prefill: bool = eg("false", False)


class AgentFilter(Group):
    min_words: int = eg("0", 0, ge=0)
    max_words: Optional[int] = eg("null (no bound)", None, ge=1)
    quality: bool = eg("true", True)

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_words is not None and not self.max_words > self.min_words:
            raise ValueError(f"agentwrite.filter.max_words ({self.max_words}) must be above filter.min_words "
                             f"({self.min_words}), or null for no bound")
        return self


class AgentMix(Group):
    general: Optional[str] = None
    general_split: str = "train"
    general_per_long: float = eg("1.0", 1.0, ge=0)


class AgentWrite(Group):
    min_words: int = eg("200", 200, ge=1)
    max_words: int = eg("1000", 1000, ge=1)
    max_steps: int = eg("50", 50, ge=1)
    default_step_words: int = eg("500", 500, ge=1)
    max_items_in_flight: Optional[int] = eg("null (all)", None, ge=1)
    max_written_chars: Optional[int] = eg("40000", 40000, ge=1)
    plan: Phase = Phase(max_tokens=2048)
    write: Phase = Phase(max_tokens=4096)
    filter: AgentFilter = AgentFilter()
    mix: AgentMix = AgentMix()

    @model_validator(mode="after")
    def _bounds(self):
        if not self.min_words <= self.max_words:
            raise ValueError(f"agentwrite.min_words ({self.min_words}) must be > 0 and <= agentwrite.max_words "
                             f"({self.max_words})")
        return self
