"""The one training launcher: where one adapter trains (train.workers, train.strategy), for
every trainer (SFT, DPO, ...), with the same placement, checkpoints and resume.

The trainer protocol. A trainer is a function, registered by name in TRAINERS below as
"module:function" (imported only when that trainer runs):

    train(base_model: str, data_path: str, out_dir: str, init_adapter: str | None,
          tcfg: dict, seed: int, *, extra_callbacks=(), save_dir: str | None = None) -> dict

It trains one adapter on the JSONL at data_path, continuing init_adapter (None: a fresh LoRA
of tcfg's shape), and returns its info (plain data: the manifest's fields). tcfg is the
trainer's settings as a plain dict: train.* (placement: workers, strategy, num_cpus,
num_gpus, save_every_steps, ...) with the trainer's own keys on top. The same function runs
alone in a Ray task or on each worker of a Ray Train run; it builds its TRL trainer around
training/harness.py, which gives every trainer the same work folder, resume point (the
newest complete checkpoint there: `harness.begin`), checkpoint arguments, callbacks (add
`extra_callbacks`: the launcher's Ray Train reports) and end (`harness.finish`: refuse a
non-finite loss with NonFiniteLoss, rank 0 saves to save_dir when given, else out_dir).
Adding a trainer is its module (training/<name>.py) and one line in TRAINERS; a verb or a
stage then calls `launch(..., trainer="<name>")`.

Where it runs:
- train.workers=1 with ddp: one Ray task of train.num_cpus / train.num_gpus runs the
  trainer (the single-process path).
- otherwise: a Ray Train `TorchTrainer` of train.workers workers, each with those resources,
  runs the same trainer inside the torch.distributed group Ray Train sets up (gloo on CPUs,
  NCCL on GPUs); TRL/accelerate join it, shard the data, and apply FSDP or DeepSpeed when
  asked. The Ray Train run's folder is the adapter's work folder (on a filesystem every
  node sees): TRL's checkpoints are written there and registered with Ray Train in place
  (no copy), and rank 0 saves the trained adapter there too, as the run's last checkpoint,
  reported with rank 0's info; `fit` then moves it to the adapter's folder. A rerun after
  a kill finds Ray Train's snapshot and TRL's checkpoints there and resumes the same way
  as the single-process path (training/checkpoints.py).

`launch` returns an ObjectRef either way; its value is the trainer's info, or the task
raises NonFiniteLoss.
"""
from __future__ import annotations

import importlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

import ray

from selflengthen.core import suggested
from selflengthen.core.errors import UserError
from selflengthen.training import checkpoints, strategy
from selflengthen.training.harness import NonFiniteLoss, work_dir_of

# name -> "module:function" of a trainer keeping the protocol above
TRAINERS: dict[str, str] = {
    "sft": "selflengthen.training.sft:train_adapter",
    "dpo": "selflengthen.training.dpo:train_dpo_adapter",
    "grpo": "selflengthen.training.grpo:train_grpo_adapter",
}

def trainer_function(name: str) -> Callable[..., dict]:
    """The registered trainer `name` (imported now)."""
    if name not in TRAINERS:
        raise ValueError(f"no trainer named {name!r}; the registered trainers: {', '.join(TRAINERS)}")
    module, function = TRAINERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def placement_problem(engine_cfg, train_cfgs: list[dict], total_gpus: float, node_gpus: list[float],
                      total_cpus: float) -> str | None:
    """What the cluster lacks for the run's engines and trainers, as one line naming the
    settings to change, or None. Serving: engine.replicas x tensor_parallel_size GPUs, each
    replica's on one node (the openai engine serves elsewhere; a cluster without GPUs
    serves on CPUs). Training: per adapter, train.workers x train.num_gpus GPUs and
    x train.num_cpus CPUs (training/strategy.py), each worker's GPUs on one node."""
    largest = max(node_gpus, default=total_gpus)
    found = []
    if total_gpus > 0 and engine_cfg.serves_local_weights:  # a server elsewhere uses its own GPUs
        tp = engine_cfg.tensor_parallel_size
        if tp > largest:
            found.append(f"a serving replica needs engine.tensor_parallel_size={tp} GPUs on one node and the "
                         f"largest node has {largest:g}")
        elif engine_cfg.replicas != "auto" and engine_cfg.replicas * tp > total_gpus:
            found.append(f"serving needs engine.replicas={engine_cfg.replicas} x engine.tensor_parallel_size={tp} = "
                         f"{engine_cfg.replicas * tp} GPUs and the cluster has {total_gpus:g} "
                         f"(engine.replicas=auto uses what there is)")
    for rc in train_cfgs:
        if total_gpus > 0 and float(rc["num_gpus"]) > largest:
            found.append(f"a training worker needs train.num_gpus={float(rc['num_gpus']):g} GPUs on one node and "
                         f"the largest node has {largest:g}")
        found += strategy.cluster_problems({"workers": 1, "strategy": "ddp", **rc}, total_gpus, total_cpus)
    if not found:
        return None
    return "; ".join(dict.fromkeys(found)) + f" (`{suggested.RAY_STATUS}` lists the cluster's GPUs and CPUs)"


def check_placement(engine_cfg, train_cfgs: list[dict]) -> None:
    """Before any work: the cluster must have what serving and training ask for (Ray would
    otherwise wait forever for resources that never come)."""
    nodes = [float(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes() if n.get("Alive", True)]
    resources = ray.cluster_resources()
    problem = placement_problem(engine_cfg, train_cfgs, float(resources.get("GPU", 0)), nodes,
                                float(resources.get("CPU", 0)))
    if problem:
        raise UserError(problem)



def placement(role_cfgs: list[dict]) -> tuple[float, bool]:
    """(the cluster's GPUs, whether these trainings fit in the cluster at once: else they run
    one after another). A training the cluster cannot hold at all is a one-line UserError,
    not a wait forever."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    found = list(dict.fromkeys(p for rc in role_cfgs for p in strategy.cluster_problems(rc, gpus, cpus)))
    if found:
        raise UserError("; ".join(found))
    need_cpus = sum(rc["workers"] * rc["num_cpus"] for rc in role_cfgs)
    need_gpus = sum(rc["workers"] * rc["num_gpus"] for rc in role_cfgs) if gpus else 0
    return gpus, need_cpus <= cpus and need_gpus <= gpus


def uses_ray_train(tcfg: dict) -> bool:
    return tcfg["workers"] > 1 or tcfg["strategy"] != "ddp"


def launch(base_model: str, data_path: str, out_dir: str, init_adapter: str | None, tcfg: dict, seed: int,
           *, gpus: float, trainer: str = "sft") -> ray.ObjectRef:
    """Start training one adapter with the registered `trainer`; an ObjectRef of its info."""
    train = trainer_function(trainer)
    num_gpus = tcfg["num_gpus"] if gpus else 0
    if not uses_ray_train(tcfg):
        # no silent retry: a trainer Ray killed (for memory, most often) would start again from its
        # newest checkpoint in the same conditions; the command stops with one line instead, and
        # the same command resumes from that checkpoint once memory is freed
        task = ray.remote(train).options(num_cpus=tcfg["num_cpus"], num_gpus=num_gpus, max_retries=0)
        return task.remote(base_model, data_path, out_dir, init_adapter, tcfg, seed)
    # fit() blocks until the workers finish: a resource-free task, so both adapters can run at once
    return ray.remote(fit).options(num_cpus=0, num_gpus=0, max_retries=0).remote(
        base_model, data_path, out_dir, init_adapter, tcfg, seed, gpus=gpus, trainer=trainer)


def fit(base_model: str, data_path: str, out_dir: str, init_adapter: str | None, tcfg: dict, seed: int,
        *, gpus: float, trainer: str = "sft") -> dict:
    """Run one adapter's TorchTrainer to the end; rank 0's info (the metrics it reported with
    the saved adapter), plus where Ray Train recorded it."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.exceptions import WorkerGroupError

    out_dir = str(Path(out_dir).resolve())  # Ray Train accepts checkpoints under its run folder, resolved
    work_dir = work_dir_of(out_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Ray Train's print patch sends print() to its logger, which breaks code that captures
    # stdout (dill's globalvars, behind datasets' fingerprints, prints bytecode instead)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    resources = {"CPU": tcfg["num_cpus"], **({"GPU": tcfg["num_gpus"]} if gpus else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"args": (base_model, data_path, out_dir, init_adapter, tcfg, seed),
                           "trainer": trainer, "attempt": uuid.uuid4().hex[:8]},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ScalingConfig(num_workers=tcfg["workers"], use_gpu=bool(gpus),
                                     resources_per_worker=resources),
        run_config=RunConfig(name=work_dir.name, storage_path=str(work_dir.parent),
                             failure_config=FailureConfig(max_failures=0)),
    )
    try:
        result = trainer.fit()
    except WorkerGroupError as err:
        raise _worker_error(err) from None
    info = dict(result.metrics or {})
    assert info.get("steps") is not None and result.checkpoint, f"rank 0 reported no adapter: {result}"
    saved = Path(result.checkpoint.path)
    info["ray_train"] = {"checkpoint": saved.name, "storage": str(work_dir), "workers": tcfg["workers"]}
    shutil.rmtree(out_dir, ignore_errors=True)  # publish the adapter, as save_trained does
    saved.rename(out_dir)
    checkpoints.fsync_dir(Path(out_dir).parent)
    shutil.rmtree(work_dir, ignore_errors=True)  # after fit(): Ray Train writes there until it returns
    return info


def _worker(config: dict) -> None:
    """One Ray Train worker: the trainer's code of the single-process path, then a report
    (rank 0: its info, with the saved adapter as the run's checkpoint; the others: nothing)."""
    import ray.train

    final = work_dir_of(config["args"][2]) / f"adapter-{config['attempt']}"
    train = trainer_function(config.get("trainer", "sft"))
    info = train(*config["args"], extra_callbacks=[_report_checkpoints()], save_dir=str(final))
    rank0 = ray.train.get_context().get_world_rank() == 0
    _report(info if rank0 else {}, final if rank0 else None)


def _report(metrics: dict, folder: Path | None) -> None:
    """ray.train.report; a checkpoint folder is already in the run's folder: registered where it is."""
    import ray.train
    from ray.train import Checkpoint, CheckpointUploadMode

    if folder is None:
        ray.train.report(metrics, checkpoint=None)
    else:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)),
                         checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)


def _report_checkpoints():
    """A TRL callback: each complete trainer checkpoint is reported to Ray Train (every rank
    reports, as Ray Train requires; rank 0 with the folder). Runs after the marker is written."""
    from transformers import TrainerCallback

    class ReportCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            metrics = {"step": state.global_step, "loss": losses[-1] if losses else None}
            _report(metrics, folder if state.is_world_process_zero else None)

    return ReportCheckpoint()


def _worker_error(err) -> Exception:
    """The first worker's failure: NonFiniteLoss as itself (its message names the settings),
    anything else as one line."""
    failures = list(getattr(err, "worker_failures", {}).values())
    for failure in failures:
        cause = failure
        while cause is not None:
            if isinstance(cause, NonFiniteLoss):
                return NonFiniteLoss(str(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__
        text = str(failure)
        if "NonFiniteLoss: " in text:
            return NonFiniteLoss(text.split("NonFiniteLoss: ", 1)[1].splitlines()[0])
    last = str(failures[0] if failures else err).strip().splitlines()
    return RuntimeError(f"a training worker failed: {last[-1] if last else repr(err)}")
