"""Stage 5: LoRA fine-tuning of both roles on the iteration's SFT data (algorithm.md 1.4).

Each adapter continues from the previous iteration's (none in iteration 1). Both train at
once when the cluster has room for both, else one after the other; each is a Ray task or
a Ray Train job (training/ray_train.py). A role with no accepted data keeps the previous
adapter (copied over), and says so; in iteration 1 that is a UserError naming why the data
is empty. Each role's result is its own manifest (manifests/train_<role>.json), so a run
stopped between the two trains only the one that is missing.
"""
from __future__ import annotations

import logging
import shutil

import ray

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.engines import workers
from selflengthen.pipeline import metrics, observe
from selflengthen.pipeline.stage import Inputs, Output, Stage
from selflengthen.store import artifacts
from selflengthen.training import harness, ray_train

log = logging.getLogger("selflengthen")


def settings_of(settings: schema.Config) -> dict:
    """train.* and the served dtype, which train.bf16=auto follows (core/precision.py)."""
    return {"train": settings.train, "model_dtype": settings.model.dtype}


def role_configs(chosen: dict) -> dict[str, dict]:
    """Each role's training config as the trainers take it (a plain dict, shipped to Ray
    tasks): train.* with train.per_role.<role> on top, torch threads decided
    (workers.with_cpu_threads) and the model's dtype beside it."""
    base = workers.with_cpu_threads({**chosen["train"].model_dump(), "model_dtype": chosen["model_dtype"]})
    return {role: {**base, **(base["per_role"].get(role) or {})} for role in artifacts.ROLES}


def run(chosen: dict, inputs: Inputs) -> Output:
    """Train (or carry over) both adapters of iteration inputs.paths.k."""
    it = inputs.paths
    role_cfgs = role_configs(chosen)
    gpus, fits = ray_train.placement(list(role_cfgs.values()))
    together = fits and all(rc["parallel"] for rc in role_cfgs.values())  # both at once when allowed and room
    sft_rows = artifacts.read_json(it.stage_manifest("curate"))["counts"]
    roles, pending = {}, {}
    for role in artifacts.ROLES:
        role_manifest = it.stage_manifest(f"train_{role}")
        if role_manifest.exists():
            roles[role] = artifacts.read_json(role_manifest)
            continue
        if not sft_rows[role]:
            roles[role] = carry_adapter_over(it, role, inputs.adapters.get(role))
            continue
        role_cfg = {**role_cfgs[role], "report": observe.train_report(it.k, role)}
        pending[role] = ray_train.launch(inputs.model_path, str(it.sft(role)), str(it.adapter(role)),
                                         inputs.adapters.get(role), role_cfg, inputs.seed, gpus=gpus,
                                         trainer="sft")
        if not together:
            roles[role] = finish_training(it, role, pending[role])
    for role, ref in pending.items():
        if role not in roles:
            roles[role] = finish_training(it, role, ref)
    return Output(counts={r: info["examples"] for r, info in roles.items()},
                  outputs=[it.adapter(r) for r in artifacts.ROLES], extra={"roles": roles})


def carry_adapter_over(it: artifacts.IterationPaths, role: str, previous: str | None) -> dict:
    """No accepted data for this role: keep the previous adapter (nothing to learn from)."""
    if previous is None:
        raise UserError(f"iteration {it.k} produced no {role} training data: {metrics.why_empty(it)}; the generated data "
                        f"is kept in {it.root} -- change those settings in a new run (run.name=NEW_NAME)")
    log.warning("iteration %d: no %s training data (%s); carrying the adapter of iteration %d over", it.k, role,
                metrics.why_empty(it), it.k - 1)
    shutil.rmtree(it.adapter(role), ignore_errors=True)
    shutil.copytree(previous, it.adapter(role))
    info = {"examples": 0, "steps": 0, "train_loss": None, "init_adapter": previous,
            "skipped": f"no training data; adapter of iteration {it.k - 1} carried over", "seconds": 0.0}
    artifacts.write_json(it.stage_manifest(f"train_{role}"), info)
    return info


def finish_training(it: artifacts.IterationPaths, role: str, ref) -> dict:
    """Wait for one adapter's training; its manifest, or a UserError naming the settings."""
    try:
        info = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(getattr(err, "cause", None), harness.NonFiniteLoss):  # its message names the settings
            raise UserError(f"training the {role} adapter of iteration {it.k} stopped: {err.cause} (train.* is part of "
                            "the method: change it in a new run, run.name=NEW_NAME)") from err
        raise UserError(f"training the {role} adapter of iteration {it.k} failed: "
                        f"{str(err).strip().splitlines()[-1][:300]} -- the generated data is kept; "
                        f"fix the train.* settings and rerun the same command to resume") from err
    artifacts.write_json(it.stage_manifest(f"train_{role}"), info)
    return info


STAGE = Stage("train", unit="step", settings=settings_of, body=run, writes=("adapters/generator", "adapters/extender"))
