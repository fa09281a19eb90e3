"""The typed schema of the composed config, in one place to import from: every value's type
and range is declared once, in the config package's module for its concern, and re-exported
here (`from selflengthen.config import schema; schema.Model`).

Hydra composes the YAML in conf/; these types check the result before any work starts.
A key is checked by declaring it (pydantic, strict: `true`/`false` only for a boolean, a
whole number where one is needed, no string where a number is expected). Every group
declares all its keys and refuses one it does not know (`Group`, extra="forbid"), so a new
key is typed in its group before a config may set it. The verbs' own groups and keys are
typed too; the rules that join several of their values stay with the verb
(finalize/constraints.py, commands/dpo.py). Cross-key rules (a value below another) are
`model_validator`s; they run only when their group's types are right. `problems(cfg)`
returns one line per bad value: the key, the value, what it must be and an example of a
valid setting.

- group.py: `Group`, `eg`, `Language`, `typed_slice`, `from_node`
- loop.py: loop.* (sampling, the stages' groups, the quality rules) and agentwrite.*
- training.py: train.* and dpo.*
- serving.py: model.*, engine.* (the `Engine` union), ray.*
- evaluation.py: eval.* and judge.* (the `Judge` union)
- finalize.py: finalize.*
- run.py: the run verb's root (`Config`), its own keys and `Method`
- roots.py: the other verbs' roots and `VERBS`
- problems.py: `check`, `problems`, `unknown_key`: the one-line wording of a bad value
"""
from __future__ import annotations

from selflengthen.config.evaluation import Eval, Judge, Judging, NoJudge, OpenaiJudge, Prices, Questions, VllmJudge
from selflengthen.config.finalize import (Constraints, Finalize, FinalizeTraining, LengthUnit, Rewrite, RewriteVerify,
                                          TypeProbs)
from selflengthen.config.group import Group, Language, eg, from_node, typed_slice
from selflengthen.config.loop import (SYNTHS, AgentFilter, AgentMix, AgentWrite, Augment, Curate, Decoding, Extend,
                                      Generate, Guard, Loop, Phase, QualityRule, Sampling, Synth)
from selflengthen.config.problems import _lines, check, problems, unknown_key
from selflengthen.config.rl import RlConfig
from selflengthen.config.roots import (VERBS, AgentWriteConfig, DpoConfig, Estimate, EstimateConfig, EvalConfig,
                                       FinalizeConfig)
from selflengthen.config.run import (Config, Method, MlflowTracking, Paths, Run, Seeds, Status, TensorBoardTracking,
                                     Tracking, WandbTracking)
from selflengthen.config.serving import (ENGINE_TYPES, Dtype, Engine, Model, OpenaiEngine, Ray, ReplicaEngine,
                                         TinyBuild, TransformersEngine, VllmEngine)
from selflengthen.config.training import Dpo, DpoTrain, Optimization, Roles, Train

__all__ = [
    "eg", "Language", "Group", "typed_slice", "from_node",
    "Decoding", "Sampling", "Augment", "Generate", "Extend", "Curate", "Guard", "QualityRule", "Synth", "SYNTHS",
    "Loop", "Phase", "AgentFilter", "AgentMix", "AgentWrite",
    "Optimization", "Roles", "Train", "DpoTrain", "Dpo",
    "ReplicaEngine", "VllmEngine", "TransformersEngine", "OpenaiEngine", "Engine", "ENGINE_TYPES", "Dtype",
    "TinyBuild", "Model", "Ray",
    "Questions", "Eval", "Prices", "Judging", "NoJudge", "VllmJudge", "OpenaiJudge", "Judge",
    "FinalizeTraining", "LengthUnit", "TypeProbs", "Constraints", "RewriteVerify", "Rewrite", "Finalize",
    "Run", "Paths", "Seeds", "Status", "TensorBoardTracking", "MlflowTracking", "WandbTracking", "Tracking",
    "Config", "Method",
    "Estimate", "EvalConfig", "DpoConfig", "AgentWriteConfig", "FinalizeConfig", "EstimateConfig", "RlConfig", "VERBS",
    "unknown_key", "_lines", "problems", "check",
]
