"""Stage 5: LoRA fine-tuning of the generator and the extender with TRL (algorithm.md 1.4).

Each adapter continues from the previous iteration's adapter of the same role (or starts
fresh in iteration 1). The SFT files hold chat `messages`; training turns each into a
prompt-completion pair so the loss covers the assistant's text only. `train_adapter` is the
"sft" trainer of training/ray_train.py (its protocol): it runs inside a Ray task, or on each
worker of a Ray Train run; the checkpoints a killed training resumes from, the callbacks and
the save are training/harness.py's, the same for every trainer.
"""
from __future__ import annotations

import math
import time

from selflengthen.training import harness, ranks


def to_prompt_completion(row: dict) -> dict:
    messages = row["messages"]
    assert messages[-1]["role"] == "assistant", "an SFT record must end with the assistant's turn"
    return {"prompt": messages[:-1], "completion": messages[-1:]}


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
    report_to = harness.report_to(tcfg)
    full = tcfg.get("method", "lora") == "full"  # the final model may be fully fine-tuned (finalize)
    s = harness.setup(base_model, sft_path, init_adapter, tcfg, full=full)
    cuda, bf16, tokenizer, model, peft_config, rows = s.cuda, s.bf16, s.tokenizer, s.model, s.peft_config, s.rows
    dataset = Dataset.from_list([to_prompt_completion(r) for r in rows])
    start = harness.begin(out_dir)
    args = SFTConfig(
        output_dir=str(start.work_dir),
        learning_rate=tcfg["learning_rate"],
        num_train_epochs=tcfg["epochs"],
        max_steps=step_cap(len(rows), tcfg, start.world),
        lr_scheduler_type=tcfg["lr_scheduler"],
        warmup_steps=tcfg["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=tcfg["per_device_batch_size"],
        gradient_accumulation_steps=tcfg["gradient_accumulation_steps"],
        max_length=tcfg["max_length"],
        bf16=bf16,
        use_cpu=not cuda,
        logging_steps=tcfg["logging_steps"],
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **harness.checkpoint_args(tcfg, cuda),
    )
    guard, callbacks = harness.callbacks(start, tcfg, extra_callbacks)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    seen = ranks.batch_counter(trainer.model)
    result = trainer.train(resume_from_checkpoint=start.resume_from)
    digest = harness.finish(trainer, result, guard, tcfg, start, out_dir, save_dir, full=full, tokenizer=tokenizer)
    workers = ranks.gather({"rank": start.rank, **seen, "adapter_digest": digest})
    ranks.barrier()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(rows),
        "steps": trainer.state.global_step,
        # resumed: TRL averages over this invocation's steps only; the logged curve covers all
        "train_loss": sum(losses) / len(losses) if start.resume and losses else result.training_loss,
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
        "world_size": start.world,
        "workers": workers,  # per rank: micro-batches, sequences and tokens it trained on, its adapter's digest
        "adapter_digest": digest,
        "save_every_steps": tcfg["save_every_steps"],
        **start.info(),
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

