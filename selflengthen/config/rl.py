"""The `rl` verb's typed settings (conf/rl.yaml, conf/rl/default.yaml): GRPO with TRL on
LoRA, its rewards and their aggregation (core/rewards.py, training/grpo.py). The root,
`RlConfig`, is named by the rl row of the verb table (config/verbs.py), which
config/roots.py turns into schema.VERBS."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from selflengthen.config.group import Group, eg
from selflengthen.config.names import SafeName
from selflengthen.config.run import Config

REWARDS = ("length", "termination", "repetition", "quality")


class RlTrain(Group):
    """rl.train: GRPO's optimisation and sampling (TRL's GRPOConfig names where they exist)."""
    steps: int = eg("60", 60, ge=1)
    prompts_per_step: int = eg("2", 2, ge=1)
    num_generations: int = eg("8", 8, ge=2)
    accumulation: int = eg("1 (or 4: a step's answers in 4 passes)", 1, ge=1)
    max_completion_length: int = eg("768", 768, ge=1)
    temperature: float = eg("1.0", 1.0, gt=0)
    top_p: float = eg("1.0 (the evaluation samples with 0.8)", 1.0, gt=0, le=1)
    top_k: int = eg("0 (none; the evaluation samples with 20)", 0, ge=0)
    repetition_penalty: float = eg("1.0 (none; the evaluation samples with 1.1)", 1.0, gt=0)
    learning_rate: float = eg("1e-4", 1e-4, gt=0)
    lr_scheduler: str = "constant"
    warmup_ratio: float = eg("0.0", 0.0, ge=0, le=1)
    beta: float = eg("0.0", 0.0, ge=0)
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = eg("dapo", "dapo")
    scale_rewards: Literal["group", "batch", "none"] = eg("group", "group")
    mask_truncated_completions: bool = eg("false", False)
    save_every_steps: int = eg("20 (0: no checkpoints)", 20, ge=0)
    generation: Literal["transformers", "vllm_colocate", "vllm_server"] = eg("transformers", "transformers")
    vllm_gpu_memory_utilization: float = eg("0.3", 0.3, gt=0, lt=1)
    vllm_server_url: Optional[str] = eg("http://HOST:8000", None)

    @model_validator(mode="after")
    def _passes(self):
        answers = self.prompts_per_step * self.num_generations
        if answers % self.accumulation:
            raise ValueError(f"rl.train.accumulation={self.accumulation} must divide the step's answers "
                             f"(rl.train.prompts_per_step x num_generations = {answers})")
        return self

    @model_validator(mode="after")
    def _server(self):
        if self.generation == "vllm_server" and not self.vllm_server_url:
            raise ValueError("rl.train.generation=vllm_server generates on a TRL vLLM server: start one on other "
                             "GPUs (`trl vllm-serve --model MODEL --port 8000`) and pass "
                             "rl.train.vllm_server_url=http://HOST:8000")
        return self


class RewardWeights(Group):
    length: float = eg("1.0", 1.0)
    termination: float = eg("3.0", 3.0)
    repetition: float = eg("1.0", 1.0)
    quality: float = eg("1.0", 1.0)


class Rewards(Group):
    """rl.rewards: which rewards, their weights and how they combine."""
    use: list[Literal["length", "termination", "repetition", "quality"]] = eg(
        "[length,termination,repetition]", ["length", "termination", "repetition"], min_length=1)
    weights: RewardWeights = RewardWeights()
    aggregation: Literal["normalize_then_sum", "sum_then_normalize", "multiply"] = eg(
        "normalize_then_sum", "normalize_then_sum")
    ceiling_factor: float = eg("2.0", 2.0, gt=1)
    loop_floor: float = eg("0.3", 0.3, gt=0, le=1)
    quality: Literal["none", "model", "judge"] = eg("none", "none")
    quality_model: Optional[str] = eg("/path/to/a/sequence-classification/model", None)
    rubric: Literal["longbench", "longen"] = eg("longbench", "longbench")

    @model_validator(mode="after")
    def _quality(self):
        if "quality" in self.use and (self.quality == "none" or (self.quality == "model" and not self.quality_model)):
            raise ValueError("rl.rewards.use holds quality: set rl.rewards.quality=judge (with judge=openai, a served "
                             "judge) or rl.rewards.quality=model and rl.rewards.quality_model=FOLDER (a "
                             "sequence-classification reward model), or drop it "
                             "(rl.rewards.use=[length,termination,repetition])")
        if self.aggregation == "multiply" and "quality" in self.use and self.quality == "model":
            raise ValueError("rl.rewards.aggregation=multiply multiplies rewards the project computes, and a "
                             "quality model folder is scored inside TRL: use aggregation=normalize_then_sum with "
                             "rl.rewards.quality=model, or rl.rewards.quality=judge")
        return self


class Rl(Group):
    train: RlTrain = RlTrain()
    rewards: Rewards = Rewards()


class RlConfig(Config):
    """`rl` (conf/rl.yaml)."""
    prompts: Optional[str] = eg("prompts.jsonl (or RUN/iter_K, or a packaged set: tiny (null), writing)", None)
    adapter: Optional[str] = None
    limit: Optional[int] = eg("64 (or null: all)", None, ge=1)
    name: Optional[SafeName] = eg("my-rl", None)
    out_dir: str = eg("rl", min_length=1)
    rl: Rl = Rl()

    @model_validator(mode="after")
    def _judge(self):
        r = self.rl.rewards
        if "quality" in r.use and r.quality == "judge" and self.judge.kind != "openai":
            raise ValueError(f"rl.rewards.quality=judge rates answers with a served judge and judge={self.judge.kind} "
                             "is not one: serve the judge on its own devices (e.g. `vllm serve MODEL --port 8001`) "
                             "and pass judge=openai judge.base_url=http://HOST:8001/v1 judge.model=MODEL")
        return self

