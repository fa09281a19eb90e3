"""The other verbs' roots (the run's keys and the verb's own: eval, dpo, agentwrite,
finalize, estimate) and `VERBS`, the root each verb's config is checked against (read from
the verb table, config/verbs.py: a row names its root's class here)."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import field_validator

from selflengthen.config.verbs import VERBS as VERB_ROWS
from selflengthen.config.evaluation import Questions
from selflengthen.config.group import Group, eg
from selflengthen.config.names import SafeName  # every name that becomes a folder (config/names.py)
from selflengthen.config.rl import Rl, RlConfig  # noqa: F401 (RlConfig: the rl verb's root, named in config/verbs.py)
from selflengthen.config.run import Config
from selflengthen.config.training import Dpo


class Estimate(Group):
    """estimate.* (conf/estimate.yaml): the estimate verb's assumptions."""
    initial_words: float = eg("1000", 1000, gt=0)
    growth_per_round: float = eg("1.26", 1.26, gt=0)
    carryover: float = eg("1.0", 1.0, gt=0)
    instruction_words: float = eg("40", 40, gt=0)
    tokens_per_word: dict[str, float] = {"en": 1.35, "zh": 0.75}
    chat_overhead_tokens: float = eg("30", 30, ge=0)
    augment_pass_rate: float = eg("0.9", 0.9, gt=0, le=1)
    judge_yes_rate: float = eg("0.8", 0.8, gt=0, le=1)
    generate_pass_rate: float = eg("0.8", 0.8, gt=0, le=1)
    extend_accept_rate: float = eg("0.6", 0.6, gt=0, le=1)
    tokens_per_s_per_gpu: Optional[float] = eg("3000", None, gt=0)
    from_run: Optional[str] = None
    train_tokens_per_s_per_gpu: Optional[float] = eg("5000", None, gt=0)
    gpu_tflops: float = eg("989 (H100 bf16)", 989, gt=0)
    mfu: float = eg("0.35", 0.35, gt=0, le=1)
    gpus: int = eg("8", 8, ge=1)
    gpu_memory_gib: float = eg("80", 80, gt=0)
    concurrent_sequences: int = eg("32", 32, ge=1)
    overhead_gib: float = eg("2", 2.0, ge=0)
    out: Optional[str] = None
    verb: Literal["run", "rl"] = eg("rl (a GRPO job of conf/rl.yaml's rl.* keys)", "run")
    rl_completion_fraction: float = eg("0.5", 0.5, gt=0, le=1)


class EvalConfig(Config, Questions):
    """`eval` (conf/eval.yaml): the run's keys and the verb's own (Questions' among them)."""
    benchmark: Optional[Union[str, list[str]]] = eg("heldout_tiny (eval: or a list, [longen,ruler])", None)
    adapter: Optional[str] = None
    predictions: Optional[str] = None
    samples: int = eg("4", 1, ge=1)
    name: Optional[SafeName] = eg("my-eval", None)
    out_dir: str = eg("eval", min_length=1)

    @field_validator("benchmark")
    @classmethod
    def _named(cls, v):
        if v is None:
            raise ValueError("is not set; give one (benchmark=longbench_write) or a list (benchmark=[longen,ruler])")
        if not v:
            raise ValueError("names no benchmark; give one (benchmark=longbench_write) or a list "
                             "(benchmark=[longen,ruler])")
        return v

    @property
    def benchmarks(self) -> list[str]:
        """`benchmark=NAME` or `benchmark=[A,B]`: the names, in order, each once."""
        return list(dict.fromkeys([self.benchmark] if isinstance(self.benchmark, str) else self.benchmark))


class DpoConfig(Config, Questions):
    """`dpo` (conf/dpo.yaml): the run's keys and the verb's own (Questions' among them)."""
    benchmark: str = eg("heldout_tiny", min_length=1)
    adapter: Optional[str] = None
    name: Optional[SafeName] = eg("my-dpo", None)
    out_dir: str = eg("dpo", min_length=1)
    dpo: Dpo


class AgentWriteConfig(Config):
    """`agentwrite` (conf/agentwrite.yaml)."""
    input: Optional[str] = None
    adapter: Optional[str] = None
    limit: Optional[int] = eg("6 (or null: all)", None, ge=1)
    name: Optional[SafeName] = eg("my-set", None)
    out_dir: str = eg("agentwrite", min_length=1)


class FinalizeConfig(Config):
    """`finalize` (conf/finalize.yaml)."""
    step: Literal["all", "collect", "constrain", "export", "train", "eval"] = eg("all", "all")


class EstimateConfig(Config):
    """`estimate` (conf/estimate.yaml)."""
    estimate: Estimate = Estimate()
    rl: Rl = Rl()  # conf/rl/default.yaml: what estimate.verb=rl costs


# each verb's typed root, named by its row of the verb table (config/verbs.py)
VERBS: dict[str, type[Config]] = {v.name: globals()[v.settings] for v in VERB_ROWS if v.settings}
