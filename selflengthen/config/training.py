"""The training keys: train.* (the loop's LoRA training of both roles) and dpo.*."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import model_validator

from selflengthen.config.group import Group, eg


class Roles(Group):
    """train.per_role: overrides of any train.* key for one role (checked against Train by check())."""
    generator: dict = {}
    extender: dict = {}


class Optimization(Group):
    """The optimizer's schedule and batches, shared by train.* and dpo.train.*."""
    learning_rate: float = eg("1e-4", 1e-4, gt=0)
    epochs: float = eg("2", 4, gt=0)
    # at most this many optimizer steps (a cap: fewer when the epochs take fewer); null: the epochs decide
    max_steps: Optional[int] = eg("64", None, ge=1)
    lr_scheduler: str = eg("cosine", "cosine", min_length=1)
    warmup_ratio: float = eg("0.1", 0.1, ge=0, le=1)
    per_device_batch_size: int = eg("1", 1, ge=1)
    gradient_accumulation_steps: int = eg("1", 1, ge=1)
    max_length: int = eg("3072", 16384, ge=1)
    logging_steps: int = eg("1", 1, ge=1)


class Train(Optimization):
    """train.*: the LoRA adapters' shape, the optimizer's schedule and where training runs."""
    rank: int = eg("16", 16, ge=1)
    alpha: float = eg("32", 32, gt=0)
    dropout: float = eg("0.05", 0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"
    bf16: Union[bool, Literal["auto"]] = eg("auto", "auto")
    gradient_checkpointing: bool = eg("true", True)
    cpu_threads: Optional[int] = eg("null (the task's CPUs, capped by OMP_NUM_THREADS)", None, ge=1)
    num_gpus: float = eg("1", 1, ge=0)
    num_cpus: float = eg("1", 1, gt=0)
    parallel: bool = eg("true", True)
    # a run saved before workers, strategy, cpu_offload, save_every_steps existed ran as with these
    workers: int = eg("2", 1, ge=1)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = eg("ddp", "ddp")
    cpu_offload: bool = eg("false", False)
    save_every_steps: int = eg("50 (0: no checkpoints)", 50, ge=0)
    per_role: Roles = Roles()

    @model_validator(mode="after")
    def _offload(self):
        if self.cpu_offload and self.strategy == "ddp":
            raise ValueError("train.cpu_offload=true needs train.strategy=fsdp or train.strategy=deepspeed "
                             "(ddp keeps a whole copy of the model on every worker)")
        return self


class DpoTrain(Optimization):
    """dpo.train.*: DPO's own keys and its schedule (Optimization's, with these defaults)."""
    beta: float = eg("0.1", 0.1, gt=0)
    loss_type: str = eg("sigmoid", "sigmoid", min_length=1)
    learning_rate: float = eg("5e-5", 5e-5, gt=0)
    epochs: float = eg("2", 2, gt=0)
    max_length: int = eg("8192", ge=1)  # conf/dpo.yaml: the model's context


class Dpo(Group):
    samples_per_instruction: int = eg("4", 4, ge=2)
    temperature: float = eg("0.8", 0.8, gt=0)
    pairing: Literal["best_vs_worst", "all"] = eg("best_vs_worst", "best_vs_worst")
    min_margin: float = eg("10.0", 10.0, ge=0)
    penalties: list[Literal["termination", "repetition"]] = eg(
        "[termination,repetition]", ["termination", "repetition"])
    train: DpoTrain
