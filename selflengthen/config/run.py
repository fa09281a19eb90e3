"""The `run` verb's config (`Config`: also what a run saves as config.yaml), its own keys
(run, paths, seeds, status, tracking) and the method a resumed run must keep (`Method`)."""
from __future__ import annotations

from typing import Literal, Optional

from selflengthen.config.evaluation import Eval, Judge, NoJudge
from selflengthen.config.finalize import Finalize
from selflengthen.config.group import Group, eg
from selflengthen.config.loop import AgentWrite, Loop
from selflengthen.config.serving import Engine, Model, Ray
from selflengthen.config.training import Train


class Run(Group):
    name: str = eg("mine", min_length=1)


class Paths(Group):
    iterations_dir: str = eg("iterations", "iterations", min_length=1)
    cache_dir: str = eg("~/.cache/selflengthen", min_length=1)


class Seeds(Group):
    path: Optional[str] = None


class Status(Group):
    interval_s: float = eg("5", 5, gt=0)
    stale_after_s: float = eg("120", 120, gt=0)


class TensorBoardTracking(Group):
    dir: Optional[str] = None


class MlflowTracking(Group):
    experiment: str = eg("selflengthen", "selflengthen", min_length=1)


class WandbTracking(Group):
    mode: Literal["offline", "online", "disabled"] = eg("offline", "offline")
    project: str = eg("selflengthen", "selflengthen", min_length=1)
    entity: Optional[str] = None


class Tracking(Group):  # conf/tracking/: each selected tracker adds its key
    group: Optional[str] = None
    tensorboard: Optional[TensorBoardTracking] = None
    mlflow: Optional[MlflowTracking] = None
    wandb: Optional[WandbTracking] = None


class Config(Group):
    """The `run` verb's config (conf/config.yaml): also what a run saves as config.yaml."""
    iterations: int = eg("4", 4, ge=1)
    seed: int = eg("0", 0, ge=0)
    run: Run
    paths: Paths
    seeds: Seeds = Seeds()
    model: Model
    loop: Loop
    train: Train = Train()
    engine: Engine
    agentwrite: AgentWrite = AgentWrite()
    eval: Eval = Eval()
    ray: Ray = Ray()
    progress: bool = eg("true", True)
    status: Status = Status()
    debug: bool = eg("false", False)
    sweep_name: Optional[str] = None
    finalize: Finalize = Finalize()
    judge: Judge = NoJudge()
    tracking: Tracking = Tracking()

    @property
    def method(self) -> Method:
        return Method.of(self.model_dump())


class Method(Group):
    """What a run computes with: a resumed run must have the same (iterations, the engine's
    placement, Ray, paths, debug may change between invocations). A config saved before a
    key existed loads with the key's default, the value the run had in effect."""
    seed: int
    model: Model
    loop: Loop
    train: Train = Train()
    seeds: Seeds = Seeds()
    agentwrite: Optional[AgentWrite] = AgentWrite()  # None where it does not run (loop.synth=extend)

    @classmethod
    def of(cls, container: dict) -> "Method":
        """The method of a config (a plain dict: a composed one, or a run's saved config.yaml)."""
        method = cls.model_validate({k: container[k] for k in cls.model_fields if k in container})
        return method.model_copy(update={"agentwrite": None}) if method.loop.synth == "extend" else method

    def changes(self, other: "Method") -> list[str]:
        """The dotted keys whose values differ, sorted (loop.guard may change between invocations)."""
        return sorted(key for key in _diff(self.model_dump(), other.model_dump()) if not key.startswith("loop.guard"))


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
