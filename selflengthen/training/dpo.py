"""DPO on LoRA with TRL's DPOTrainer, one adapter: the "dpo" trainer of training/ray_train.py
(a Ray task, or each worker of a Ray Train run, with the checkpoints, resume and save of
training/harness.py, as for SFT).

Continuing from an adapter loads it trainable; TRL then keeps a frozen copy of it (an
adapter named "ref") as the reference policy, so the KL anchor is the starting adapter,
not the bare base model. A fresh LoRA's reference is the base model (adapter disabled),
which is the same policy since LoRA starts at zero. Only the trained adapter is saved.
"""
from __future__ import annotations

import time

from selflengthen.training import harness


def to_preference(pair: dict) -> dict:
    """A pair row as TRL's conversational preference example."""
    return {"prompt": [{"role": "user", "content": pair["prompt"]}],
            "chosen": [{"role": "assistant", "content": pair["chosen"]}],
            "rejected": [{"role": "assistant", "content": pair["rejected"]}]}


def _curve(history: list[dict], key: str) -> list[float]:
    return [h[key] for h in history if key in h]


def train_dpo_adapter(base_model: str, pairs_path: str, out_dir: str, init_adapter: str | None, dcfg: dict,
                      seed: int, *, extra_callbacks=(), save_dir: str | None = None) -> dict:
    """Train one adapter on the pairs and save it to out_dir (save_dir under Ray Train); the
    training stats. A complete checkpoint in the work folder (a killed run's) is resumed from."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    started = time.time()
    s = harness.setup(base_model, pairs_path, init_adapter, dcfg)
    cuda, bf16, tokenizer, model, peft_config, rows = s.cuda, s.bf16, s.tokenizer, s.model, s.peft_config, s.rows
    dataset = Dataset.from_list([to_preference(r) for r in rows])
    start = harness.begin(out_dir)
    args = DPOConfig(
        output_dir=str(start.work_dir),
        beta=dcfg["beta"],
        loss_type=[dcfg["loss_type"]],
        learning_rate=dcfg["learning_rate"],
        num_train_epochs=dcfg["epochs"],
        max_steps=dcfg["max_steps"] if dcfg["max_steps"] else -1,
        lr_scheduler_type=dcfg["lr_scheduler"],
        warmup_steps=dcfg["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=dcfg["per_device_batch_size"],
        gradient_accumulation_steps=dcfg["gradient_accumulation_steps"],
        max_length=dcfg["max_length"],
        bf16=bf16,  # DPOConfig defaults to bf16=True: off on CPUs
        use_cpu=not cuda,
        logging_steps=dcfg["logging_steps"],
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **harness.checkpoint_args(dcfg, cuda),
    )
    guard, callbacks = harness.callbacks(start, dcfg, extra_callbacks)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=start.resume_from)
    # only the trained adapter, not TRL's frozen "ref" copy
    digest = harness.finish(trainer, result, guard, dcfg, start, out_dir, save_dir, selected_adapters=["default"])
    history = trainer.state.log_history
    losses, margins = _curve(history, "loss"), _curve(history, "rewards/margins")
    accuracies = _curve(history, "rewards/accuracies")
    return {
        "pairs": len(rows),
        "steps": trainer.state.global_step,
        "train_loss": sum(losses) / len(losses) if start.resume and losses else result.training_loss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_curve": losses,
        "reward_margin_first": margins[0] if margins else None,
        "reward_margin_last": margins[-1] if margins else None,
        "reward_margin_curve": margins,
        "reward_accuracy_curve": accuracies,
        "init_adapter": init_adapter,
        "reference": "a frozen copy of the starting adapter" if init_adapter else "the base model",
        "beta": dcfg["beta"],
        "loss_type": dcfg["loss_type"],
        "learning_rate": dcfg["learning_rate"],
        "epochs": dcfg["epochs"],
        "max_steps": dcfg["max_steps"],
        "train_seconds": round(time.time() - started, 1),
        "device": "cuda" if cuda else "cpu",
        "world_size": start.world,
        "adapter_digest": digest,
        **start.info(),
    }
