"""What every trainer shares around its TRL trainer, alone or on each worker of a Ray Train
run (training/ray_train.py launches them): the data, tokenizer and model to start from
(`setup`), the work folder beside the adapter, the checkpoints a killed training resumes
from (`begin`, `checkpoint_args`), the callbacks every trainer runs (`callbacks`: progress
file, NaN guard, checkpoint marker, and whatever the launcher adds), and the end (`finish`:
refuse a non-finite loss, gather sharded weights, rank 0 saves the adapter atomically).

A trainer module (sft.py, dpo.py) only builds its dataset, its TRL config and trainer, and
its info dict; see ray_train.py for the trainer protocol.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from selflengthen.core import precision
from selflengthen.store import jsonl
from selflengthen.store.artifacts import write_json
from selflengthen.training import checkpoints, ranks, strategy


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: training stops and nothing is saved."""


def progress_file_callback(path: Path):
    """A TRL callback writing {step, max_steps, loss} to `path` every few seconds: the
    driver's progress bar and status.json read it (the trainer runs in another process)."""
    from transformers import TrainerCallback

    class ProgressFile(TrainerCallback):
        last = 0.0
        loss = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.loss = (logs or {}).get("loss", self.loss)

        def on_step_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:  # one writer when several workers train
                return
            if time.time() - self.last >= 2 or state.global_step == state.max_steps:
                self.last = time.time()
                write_json(path, {"step": state.global_step, "max_steps": state.max_steps, "loss": self.loss})

    return ProgressFile()


def finite_loss_guard(tcfg: dict):
    """A TRL callback that stops training at the first NaN or infinite logged loss (or
    gradient norm); `finish` then raises NonFiniteLoss instead of saving."""
    from transformers import TrainerCallback

    class FiniteLoss(TrainerCallback):
        bad: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if isinstance(value, (int, float)) and not math.isfinite(value) and self.bad is None:
                    self.bad = (f"the training {key.replace('_', ' ')} became {value} at step {state.global_step}; "
                                f"the previous adapter is kept: lower train.learning_rate (now "
                                f"{tcfg['learning_rate']}), raise train.warmup_ratio (now {tcfg['warmup_ratio']}), "
                                f"or set train.bf16=false")
                    control.should_training_stop = True

    return FiniteLoss()


@dataclass
class Setup:
    """What every trainer here starts from: the data rows, the tokenizer, the model (with
    the adapter to continue, loaded trainable) and the LoRA config of a fresh adapter."""

    rows: list[dict]
    tokenizer: object
    model: object
    peft_config: object | None
    cuda: bool
    bf16: bool


def setup(base_model: str, data_path: str, init_adapter: str | None, tcfg: dict, *, full: bool = False) -> Setup:
    """Threads, rows, tokenizer and model for a training task."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(max(1, int(tcfg["cpu_threads"] or os.cpu_count() or 1)))
    rows = [row for _, row in jsonl.rows(Path(data_path))]
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = precision.train_in_bf16(tcfg["bf16"], cuda, tcfg.get("model_dtype"))
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    peft_config = None
    if full:
        assert init_adapter is None, "full fine-tuning starts from the base weights, not an adapter"
    elif init_adapter:
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(r=tcfg["rank"], lora_alpha=tcfg["alpha"], lora_dropout=tcfg["dropout"],
                                 target_modules=tcfg["target_modules"], task_type="CAUSAL_LM")
    return Setup(rows, tokenizer, model, peft_config, cuda, bf16)


def work_dir_of(out_dir: str) -> Path:
    """The trainer's work folder beside the adapter: progress, checkpoints, Ray Train's run."""
    return Path(out_dir).with_name(Path(out_dir).name + ".trainer")


def save_trained(model, out_dir: str, work_dir: Path | None, *, tokenizer=None, **save_kwargs) -> None:
    """Save to `<out_dir>.tmp` (fsync'ed), then replace out_dir with it; the trainer's work
    folder goes (unless work_dir is None: its owner removes it)."""
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    checkpoints.fsync_tree(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    checkpoints.fsync_dir(Path(out_dir).parent)  # the rename itself
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)


@dataclass
class Start:
    """Where one training stands before its trainer is built: the work folder, this
    process's rank and the world size, the checkpoint to resume from (folder, step) or
    None, and the half-written checkpoints removed."""

    work_dir: Path
    rank: int
    world: int
    resume: tuple[Path, int] | None
    dropped: list[str]

    @property
    def resume_from(self) -> str | None:
        """TRL's `resume_from_checkpoint`."""
        return str(self.resume[0]) if self.resume else None

    def info(self) -> dict:
        """The resume fields of every trainer's info."""
        return {"resumed_from_step": self.resume[1] if self.resume else None,
                "resumed_from": self.resume_from, "dropped_incomplete_checkpoints": self.dropped}


def begin(out_dir: str) -> Start:
    """Rank 0 removes the checkpoints a kill left half-written; every rank then finds the
    newest complete one in the work folder (training/checkpoints.py)."""
    work_dir = work_dir_of(out_dir)
    rank, world = ranks.rank_and_world()
    dropped = checkpoints.drop_incomplete(work_dir) if rank == 0 else []
    ranks.barrier()
    return Start(work_dir, rank, world, checkpoints.last_complete(work_dir), dropped)


def report_to(tcfg: dict):
    """TRL's `report_to` for the run's trackers (tcfg["report"], set by the loop's train
    stage; tracking/), their environment put in place; "none" when nothing is tracked."""
    report = tcfg.get("report") or {}
    os.environ.update(report.get("env") or {})
    return report.get("report_to") or "none"


def checkpoint_args(tcfg: dict, cuda: bool) -> dict:
    """The TRL config arguments every trainer shares: checkpoints every train.save_every_steps
    steps (the newest two kept), and the distributed strategy (training/strategy.py)."""
    every = tcfg["save_every_steps"]
    return {"save_strategy": "steps" if every else "no",
            "save_steps": every or 500,  # unused when save_strategy is "no"
            "save_total_limit": 2,  # the newest may be half-written when killed: the one before stays
            **strategy.sft_kwargs(tcfg, cuda)}


def callbacks(start: Start, tcfg: dict, extra=()) -> tuple[object, list]:
    """(the NaN guard, every callback a trainer runs): progress file, the guard, the
    checkpoint marker, then the launcher's own (Ray Train reports)."""
    guard = finite_loss_guard(tcfg)
    return guard, [progress_file_callback(start.work_dir / "progress.json"), guard,
                   checkpoints.mark_complete_callback(), *extra]


def finish(trainer, result, guard, tcfg: dict, start: Start, out_dir: str, save_dir: str | None, *,
           full: bool = False, tokenizer=None, **save_kwargs) -> str | None:
    """After `trainer.train()`: a non-finite loss raises NonFiniteLoss (nothing is saved);
    sharded weights are gathered (every rank takes part); rank 0 saves the adapter to
    save_dir (Ray Train's run folder, which then owns the work folder) or out_dir (the work
    folder goes). The LoRA weights' digest (None for a full model, and on ranks that hold
    no whole copy)."""
    if guard.bad or not math.isfinite(result.training_loss):  # nothing is saved: out_dir keeps what it held
        raise NonFiniteLoss(guard.bad or f"the mean training loss is {result.training_loss}; the previous adapter "
                            f"is kept: lower train.learning_rate (now {tcfg['learning_rate']}) or set train.bf16=false")
    state_dict = None
    if tcfg["strategy"] in strategy.SHARDED:  # gather the shards into one state dict (every rank takes part)
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    digest = None
    if not full and (start.rank == 0 or state_dict is None):  # a gathered state dict is whole on rank 0 only
        tensors = _adapter_tensors(trained, state_dict)
        assert tensors, "PEFT found no adapter weights in the trained model's state dict"
        digest = checkpoints.tensors_digest(tensors)
    if start.rank == 0:  # a full model is a standalone folder: vLLM and transformers load it with its tokenizer
        save_trained(trained, save_dir or out_dir, None if save_dir else start.work_dir,
                     tokenizer=tokenizer if full else None,
                     **({"state_dict": state_dict} if state_dict is not None else {}), **save_kwargs)
    return digest


def _adapter_tensors(model, state_dict: dict | None) -> dict:
    """The LoRA tensors as PEFT saves them (names without the adapter's name)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=state_dict)
