"""finalize.*: collecting the loop's data, its length constraints, the rewrite and the final
training. The rules that join several values stay with the verb (finalize/constraints.py)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from selflengthen.config.group import Group, eg
from selflengthen.config.loop import Decoding


class FinalizeTraining(Group):
    method: Literal["lora", "full"] = eg("lora", "lora")
    learning_rate: Optional[float] = eg("null (the run's train.learning_rate)", None, gt=0)
    epochs: Optional[float] = eg("null (the run's train.epochs)", None, gt=0)
    max_length: Optional[int] = eg("null (the run's train.max_length)", None, ge=1)
    rank: Optional[int] = eg("null (the run's train.rank)", None, ge=1)
    alpha: Optional[float] = eg("null (the run's train.alpha)", None, gt=0)


class LengthUnit(Group):
    words: int = eg("1000", ge=1)
    prob: float = eg("0.8", ge=0, le=1)


class TypeProbs(Group):
    about: float = eg("0.4", 0.4, ge=0, le=1)
    range: float = eg("0.25", 0.25, ge=0, le=1)
    above: float = eg("0.1", 0.1, ge=0, le=1)
    below: float = eg("0.25", 0.25, ge=0, le=1)


class Constraints(Group):  # the sums and min < max: finalize/constraints.py, once these types are right
    min_words: int = eg("2000", 2000, ge=1)
    max_words: int = eg("8000", 8000, ge=1)
    units: list[LengthUnit] = eg("[{words: 1000, prob: 1.0}]", [LengthUnit(words=2000, prob=0.2),
                                                               LengthUnit(words=1000, prob=0.8)], min_length=1)
    type_probs: TypeProbs = TypeProbs()
    zh_numeral_prob: float = eg("0.5", 0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _sound(self):
        out = []
        if not self.min_words < self.max_words:
            out.append(f"finalize.constraints.min_words ({self.min_words}) must be below max_words ({self.max_words})")
        units = sum(u.prob for u in self.units)
        if abs(units - 1) > 1e-6:
            out.append(f"finalize.constraints.units probabilities sum to {units:g}; make them sum to 1")
        types = sum(self.type_probs.model_dump().values())
        if abs(types - 1) > 1e-6:
            out.append(f"finalize.constraints.type_probs (about, range, above, below) sum to {types:g}; make them "
                       "sum to 1")
        if out:
            raise ValueError("; ".join(out))
        return self


class RewriteVerify(Group):
    min_length_ratio: float = eg("0.5", 0.5, ge=0)
    max_length_ratio: float = eg("2.5", 2.5, gt=0)
    slack_chars: int = eg("40", 40, ge=0)


class Rewrite(Decoding):
    """finalize.rewrite: the model's rewrite of an instruction with its length constraint,
    drawn with its own decoding keys (Decoding's, with these defaults)."""
    use_model: bool = eg("true", True)
    repetition_penalty: float = eg("1.0", 1.0, gt=0)
    max_tokens: int = eg("1024", 1024, ge=1)
    adapter: Optional[Literal["generator", "extender"]] = eg("null (the base model)", None)
    verify: RewriteVerify = RewriteVerify()


class Finalize(Group):
    output_dir: str = eg("final", "final", min_length=1)
    dataset_name: str = eg("selflengthen_final", "selflengthen_final", min_length=1)
    allow_unfinished: bool = eg("false", False)
    extra_per_language: int = eg("0 (only what the loop made)", 0, ge=0)
    keep_unconstrained: bool = eg("true", True)
    train: bool = eg("false", False)
    merge: bool = eg("false", False)
    training: FinalizeTraining = FinalizeTraining()
    constraints: Constraints = Constraints()
    rewrite: Rewrite = Rewrite()
