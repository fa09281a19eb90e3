"""Stage 5: LoRA fine-tuning of the generator and the extender with TRL (algorithm.md 1.4).

Each adapter continues from the previous iteration's adapter of the same role (or starts
fresh in iteration 1). The SFT files hold chat `messages`; training turns each into a
prompt-completion pair so the loss covers the assistant's text only. Runs inside a Ray
task (see `train_remote`) so it can take a GPU of the cluster.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


def to_prompt_completion(row: dict) -> dict:
    messages = row["messages"]
    assert messages[-1]["role"] == "assistant", "an SFT record must end with the assistant's turn"
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def progress_file_callback(path: Path):
    """A TRL callback writing {step, max_steps, loss} to `path` every few seconds: the
    driver's progress bar and status.json read it (the trainer runs in another process)."""
    from transformers import TrainerCallback

    from selflengthen.artifacts import write_json

    class ProgressFile(TrainerCallback):
        last = 0.0
        loss = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.loss = (logs or {}).get("loss", self.loss)

        def on_step_end(self, args, state, control, **kwargs):
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
    """Threads, rows, tokenizer and model for a training task (SFT here, DPO in dpo/trainer.py)."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(max(1, int(tcfg["cpu_threads"] or os.cpu_count() or 1)))
    rows = [json.loads(line) for line in Path(data_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = cuda and tcfg["bf16"] in (True, "auto")
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


def save_trained(model, out_dir: str, work_dir: Path, *, tokenizer=None, **save_kwargs) -> None:
    """Save to `<out_dir>.tmp`, then replace out_dir with it; the trainer's work folder goes."""
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)


def train_adapter(base_model: str, sft_path: str, out_dir: str, init_adapter: str | None, tcfg: dict,
                  seed: int) -> dict:
    """Train one adapter and save it (adapter weights + tokenizer-free PEFT config) to out_dir."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    report = tcfg.get("report") or {}  # the run's trackers (tracking/): TRL's report_to and their environment
    os.environ.update(report.get("env") or {})
    full = tcfg.get("method", "lora") == "full"  # the final model may be fully fine-tuned (finalize)
    s = setup(base_model, sft_path, init_adapter, tcfg, full=full)
    cuda, bf16, tokenizer, model, peft_config, rows = s.cuda, s.bf16, s.tokenizer, s.model, s.peft_config, s.rows
    dataset = Dataset.from_list([to_prompt_completion(r) for r in rows])
    work_dir = Path(out_dir).with_name(Path(out_dir).name + ".trainer")
    args = SFTConfig(
        output_dir=str(work_dir),
        learning_rate=tcfg["learning_rate"],
        num_train_epochs=tcfg["epochs"],
        lr_scheduler_type=tcfg["lr_scheduler"],
        warmup_steps=tcfg["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=tcfg["per_device_batch_size"],
        gradient_accumulation_steps=tcfg["gradient_accumulation_steps"],
        max_length=tcfg["max_length"],
        bf16=bf16,
        gradient_checkpointing=bool(cuda and tcfg["gradient_checkpointing"]),
        use_cpu=not cuda,
        logging_steps=tcfg["logging_steps"],
        save_strategy="no",
        report_to=report.get("report_to") or "none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )
    guard = finite_loss_guard(tcfg)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[progress_file_callback(work_dir / "progress.json"), guard])
    result = trainer.train()
    if guard.bad or not math.isfinite(result.training_loss):  # nothing is saved: out_dir keeps what it held
        raise NonFiniteLoss(guard.bad or f"the mean training loss is {result.training_loss}; the previous adapter "
                            f"is kept: lower train.learning_rate (now {tcfg['learning_rate']}) or set train.bf16=false")
    # a full model is a standalone folder: vLLM and transformers load it with its tokenizer
    save_trained(trainer.model, out_dir, work_dir, tokenizer=tokenizer if full else None)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(rows),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_curve": losses,
        "init_adapter": init_adapter,
        "method": "full" if full else "lora",
        "learning_rate": tcfg["learning_rate"],
        "epochs": tcfg["epochs"],
        "seconds": round(time.time() - started, 1),
        "device": "cuda" if cuda else "cpu",
    }


def merge_adapter(base_model: str, adapter_dir: str, out_dir: str) -> dict:
    """Merge a LoRA adapter into its base weights and save a standalone model folder
    (weights in the base's dtype, tokenizer with its chat template, generation config)
    that vLLM and transformers load without PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    params = sum(p.numel() for p in merged.parameters())
    return {"base_model": base_model, "adapter": adapter_dir, "path": out_dir, "parameters": params,
            "dtype": str(next(merged.parameters()).dtype).replace("torch.", ""),
            "seconds": round(time.time() - started, 1), "cuda": torch.cuda.is_available()}
