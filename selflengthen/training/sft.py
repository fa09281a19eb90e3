"""Stage 5: LoRA fine-tuning of the generator and the extender with TRL (algorithm.md 1.4).

Each adapter continues from the previous iteration's adapter of the same role (or starts
fresh in iteration 1). The SFT files hold chat `messages`; training turns each into a
prompt-completion pair so the loss covers the assistant's text only. `train_adapter` runs
inside a Ray task, or on each worker of a Ray Train run (training/ray_train.py decides);
trainer checkpoints every train.save_every_steps steps let a killed training resume.
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


def to_prompt_completion(row: dict) -> dict:
    messages = row["messages"]
    assert messages[-1]["role"] == "assistant", "an SFT record must end with the assistant's turn"
    return {"prompt": messages[:-1], "completion": messages[-1:]}


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


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: training stops and nothing is saved."""


def finite_loss_guard(tcfg: dict):
    """A TRL callback that stops training at the first NaN or infinite logged loss (or
    gradient norm); `train_adapter` then raises NonFiniteLoss instead of saving."""
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
    """Threads, rows, tokenizer and model for a training task (SFT here, DPO in training/dpo.py)."""
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


def train_adapter(base_model: str, sft_path: str, out_dir: str, init_adapter: str | None, tcfg: dict,
                  seed: int, *, extra_callbacks=(), save_dir: str | None = None) -> dict:
    """Train one adapter and save it (adapter weights + tokenizer-free PEFT config) to out_dir.

    The same code runs alone or on each worker of a Ray Train run: TRL joins the
    torch.distributed group when there is one, and rank 0 saves. Ray Train (ray_train.py)
    adds its callbacks and has the adapter saved to `save_dir` in its run folder (the work
    folder, which it then owns). A complete checkpoint in the work folder (left by a killed
    run) is resumed from; the info says from which step."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    report = tcfg.get("report") or {}  # the run's trackers (tracking/): TRL's report_to and their environment
    os.environ.update(report.get("env") or {})
    full = tcfg.get("method", "lora") == "full"  # the final model may be fully fine-tuned (finalize)
    s = setup(base_model, sft_path, init_adapter, tcfg, full=full)
    cuda, bf16, tokenizer, model, peft_config, rows = s.cuda, s.bf16, s.tokenizer, s.model, s.peft_config, s.rows
    dataset = Dataset.from_list([to_prompt_completion(r) for r in rows])
    work_dir = work_dir_of(out_dir)
    rank, world = ranks.rank_and_world()
    dropped = checkpoints.drop_incomplete(work_dir) if rank == 0 else []  # half-written by a kill
    ranks.barrier()
    resume = checkpoints.last_complete(work_dir)
    every = tcfg["save_every_steps"]
    args = SFTConfig(
        output_dir=str(work_dir),
        learning_rate=tcfg["learning_rate"],
        num_train_epochs=tcfg["epochs"],
        max_steps=step_cap(len(rows), tcfg, world),
        lr_scheduler_type=tcfg["lr_scheduler"],
        warmup_steps=tcfg["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=tcfg["per_device_batch_size"],
        gradient_accumulation_steps=tcfg["gradient_accumulation_steps"],
        max_length=tcfg["max_length"],
        bf16=bf16,
        use_cpu=not cuda,
        logging_steps=tcfg["logging_steps"],
        save_strategy="steps" if every else "no",
        save_steps=every or 500,  # unused when save_strategy is "no"
        save_total_limit=2,  # the newest may be half-written when killed: the one before stays
        report_to=report.get("report_to") or "none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **strategy.sft_kwargs(tcfg, cuda),
    )
    guard = finite_loss_guard(tcfg)
    callbacks = [progress_file_callback(work_dir / "progress.json"), guard, checkpoints.mark_complete_callback(),
                 *extra_callbacks]
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    seen = ranks.batch_counter(trainer.model)
    result = trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    if guard.bad or not math.isfinite(result.training_loss):  # nothing is saved: out_dir keeps what it held
        raise NonFiniteLoss(guard.bad or f"the mean training loss is {result.training_loss}; the previous adapter "
                            f"is kept: lower train.learning_rate (now {tcfg['learning_rate']}) or set train.bf16=false")
    state_dict = None
    if tcfg["strategy"] in strategy.SHARDED:  # gather the shards into one state dict (every rank takes part)
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    digest = None
    if not full and (rank == 0 or state_dict is None):  # a gathered state dict is whole on rank 0 only
        tensors = _adapter_tensors(trained, state_dict)
        assert tensors, "PEFT found no adapter weights in the trained model's state dict"
        digest = checkpoints.tensors_digest(tensors)
    workers = ranks.gather({"rank": rank, **seen, "adapter_digest": digest})
    if rank == 0:  # a full model is a standalone folder: vLLM and transformers load it with its tokenizer
        save_trained(trained, save_dir or out_dir, None if save_dir else work_dir,
                     tokenizer=tokenizer if full else None,
                     **({"state_dict": state_dict} if state_dict is not None else {}))
    ranks.barrier()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(rows),
        "steps": trainer.state.global_step,
        # resumed: TRL averages over this invocation's steps only; the logged curve covers all
        "train_loss": sum(losses) / len(losses) if resume and losses else result.training_loss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_curve": losses,
        "init_adapter": init_adapter,
        "method": "full" if full else "lora",
        "learning_rate": tcfg["learning_rate"],
        "epochs": tcfg["epochs"],
        "max_steps": tcfg.get("max_steps"),
        "seconds": round(time.time() - started, 1),
        "device": "cuda" if cuda else "cpu",
        "strategy": tcfg["strategy"],
        "world_size": world,
        "workers": workers,  # per rank: micro-batches, sequences and tokens it trained on, its adapter's digest
        "adapter_digest": digest,
        "save_every_steps": every,
        "resumed_from_step": resume[1] if resume else None,
        "resumed_from": str(resume[0]) if resume else None,
        "dropped_incomplete_checkpoints": dropped,
    }


def step_cap(examples: int, tcfg: dict, world: int = 1) -> int:
    """TRL's `max_steps` for `train.max_steps`: the cap where the epochs would take more
    optimizer steps than it, else -1 (the epochs decide). A cap, never a floor: a small
    dataset is not cycled to reach it. (The trainer's own count: ceil(examples / (batch x
    world)) micro-batches an epoch, of which every `accumulation` make a step, at least one;
    ceil(epochs x those) steps.)"""
    cap = tcfg.get("max_steps")
    if not cap:
        return -1
    batches = math.ceil(examples / (tcfg["per_device_batch_size"] * world))
    steps = math.ceil(tcfg["epochs"] * max(1, batches // tcfg["gradient_accumulation_steps"]))
    return cap if cap < steps else -1


def _adapter_tensors(model, state_dict: dict | None) -> dict:
    """The LoRA tensors as PEFT saves them (names without the adapter's name)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=state_dict)
