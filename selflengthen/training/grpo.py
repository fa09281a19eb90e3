"""GRPO on LoRA with TRL's GRPOTrainer (issue 40), one adapter, shaped like training/sft.py's
`train_adapter` so the training launcher can run it in a Ray task or on Ray Train workers.

The prompt rows carry `prompt` and the word window `lower`/`upper` (the `rl` verb reads it
from each row before any work, core/rewards.row_window); TRL hands the columns to the reward
functions as keyword arguments. Rewards (core/rewards.py) are TRL reward functions named
length, termination, repetition, and quality (none, or a sequence-classification model
folder TRL loads itself), weighted by `reward_weights` and aggregated with
`multi_objective_aggregation` (normalize_then_sum by default). Generation is TRL's own
(transformers `generate`, use_vllm=False: on CPUs TRL's colocated vLLM fails at its first
weight sync, docs/rl.md). Trainer checkpoints every `save_every_steps` steps (marked
complete as in training/checkpoints.py) let a killed run resume on the same schedule; each
logged step (every reward's mean, mean words, termination rate, repetition) is appended to
`steps.jsonl` in the work folder.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from selflengthen.core import rewards
from selflengthen.core.signals import repetition
from selflengthen.core.text import count_words
from selflengthen.training import checkpoints, ranks
from selflengthen.training.sft import finite_loss_guard, progress_file_callback, save_trained, setup, work_dir_of

STEP_LOG = "steps.jsonl"


def text_of(completion) -> str:
    """A completion as text: TRL passes chat messages for conversational prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def reward_functions(names: list[str], rcfg: dict, eos_ids: set[int]) -> list:
    """TRL reward functions for `names` (core/rewards.NAMES; quality only with a model folder),
    each named as the reward so TRL logs rewards/<name>/mean."""
    factor, floor = rcfg["ceiling_factor"], rcfg["loop_floor"]

    def length(prompts, completions, completion_ids, lower, upper, log_metric=None, **_):
        texts = [text_of(c) for c in completions]
        counts = [count_words(t) for t in texts]
        if log_metric:
            log_metric("words/mean", sum(counts) / len(counts))
            log_metric("words/in_window", sum(lo <= w <= up for w, lo, up in zip(counts, lower, upper)) / len(counts))
        return [rewards.length_reward(w, lo, up, factor) for w, lo, up in zip(counts, lower, upper, strict=True)]

    def termination(prompts, completions, completion_ids, log_metric=None, **_):
        ended = [bool(ids) and ids[-1] in eos_ids for ids in completion_ids]
        if log_metric:
            log_metric("termination/rate", sum(ended) / len(ended))
        return [rewards.termination_reward(e) for e in ended]

    def repetition_fn(prompts, completions, completion_ids, language=None, log_metric=None, **_):
        texts = [text_of(c) for c in completions]
        langs = language or [None] * len(texts)
        if log_metric:
            rates = [repetition(t, lang)["repeated_ngram_rate"] or 0.0 for t, lang in zip(texts, langs)]
            log_metric("repetition/repeated_ngram_rate", sum(rates) / len(rates))
        return [rewards.repetition_reward(t, lang, floor) for t, lang in zip(texts, langs, strict=True)]

    repetition_fn.__name__ = "repetition"
    table = {"length": length, "termination": termination, "repetition": repetition_fn}
    out = []
    for name in names:
        if name == "quality":
            out.append(rcfg["quality_model"])  # TRL loads it as AutoModelForSequenceClassification(num_labels=1)
        else:
            out.append(table[name])
    return out


def always_logged(rcfg: dict, eos_ids: set[int]) -> list:
    """The length and termination functions at weight 0 when not rewarded: their metrics
    (mean words, in-window share, termination rate) are logged every step either way."""
    names = [n for n in ("length", "termination", "repetition") if n not in rcfg["rewards"]]
    return reward_functions(names, rcfg, eos_ids), [0.0] * len(names)


def step_log_callback(path: Path):
    """A TRL callback appending each logged step's metrics as one JSON line (rank 0)."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return StepLog()


def eos_ids_of(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    generated = getattr(model, "generation_config", None)
    extra = getattr(generated, "eos_token_id", None)
    ids |= set(extra if isinstance(extra, list) else [extra])
    return {i for i in ids if i is not None}


def train_grpo_adapter(base_model: str, prompts_path: str, out_dir: str, init_adapter: str | None, rcfg: dict,
                       seed: int, *, extra_callbacks=(), save_dir: str | None = None) -> dict:
    """Train one adapter with GRPO on the prompt rows and save it to out_dir (or save_dir,
    under Ray Train); the training info. A complete checkpoint in the work folder (left by a
    killed run) is resumed from."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    started = time.time()
    report = rcfg.get("report") or {}
    os.environ.update(report.get("env") or {})
    s = setup(base_model, prompts_path, init_adapter, rcfg)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "lower": float(r["lower"]),
             "upper": float(r["upper"]), "language": r.get("language") or "en"} for r in s.rows]
    work_dir = work_dir_of(out_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    rank, world = ranks.rank_and_world()
    dropped = checkpoints.drop_incomplete(work_dir) if rank == 0 else []
    ranks.barrier()
    resume = checkpoints.last_complete(work_dir)
    every = rcfg["save_every_steps"]
    eos_ids = eos_ids_of(s.tokenizer, s.model)
    funcs = reward_functions(list(rcfg["rewards"]), rcfg, eos_ids)
    weights = [float(rcfg["reward_weights"].get(n, 1.0)) for n in rcfg["rewards"]]
    logged, zero = always_logged(rcfg, eos_ids)
    group = rcfg["num_generations"]
    args = GRPOConfig(
        output_dir=str(work_dir),
        learning_rate=rcfg["learning_rate"],
        max_steps=rcfg["steps"],
        lr_scheduler_type=rcfg["lr_scheduler"],
        warmup_steps=rcfg["warmup_ratio"],
        per_device_train_batch_size=group * rcfg["prompts_per_step"],
        gradient_accumulation_steps=1,
        num_generations=group,
        max_completion_length=rcfg["max_completion_length"],
        temperature=rcfg["temperature"],
        beta=rcfg["beta"],
        loss_type=rcfg["loss_type"],
        scale_rewards=rcfg["scale_rewards"],
        reward_weights=weights + zero,
        multi_objective_aggregation=rcfg["multi_objective_aggregation"],
        mask_truncated_completions=rcfg["mask_truncated_completions"],
        use_vllm=False,
        bf16=s.bf16,
        use_cpu=not s.cuda,
        logging_steps=1,
        save_strategy="steps" if every else "no",
        save_steps=every or 500,
        save_total_limit=2,
        report_to=report.get("report_to") or "none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )
    callbacks = [progress_file_callback(work_dir / "progress.json"), finite_loss_guard(rcfg),
                 step_log_callback(work_dir / STEP_LOG), checkpoints.mark_complete_callback(), *extra_callbacks]
    trainer = GRPOTrainer(model=s.model, reward_funcs=funcs + logged, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=s.tokenizer, peft_config=s.peft_config, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    steps_log = read_steps(work_dir / STEP_LOG)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if rank == 0:
        save_trained(trained, save_dir or out_dir, None, selected_adapters=["default"])
    ranks.barrier()
    return {
        "prompts": len(rows),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss if math.isfinite(result.training_loss) else None,
        "rewards": list(rcfg["rewards"]),
        "reward_weights": dict(zip(rcfg["rewards"], weights, strict=True)),
        "multi_objective_aggregation": rcfg["multi_objective_aggregation"],
        "num_generations": group,
        "max_completion_length": rcfg["max_completion_length"],
        "generated_tokens": generated_tokens(steps_log, group * rcfg["prompts_per_step"]),
        "first_step": steps_log[0] if steps_log else None,
        "last_step": steps_log[-1] if steps_log else None,
        "init_adapter": init_adapter,
        "seconds": round(time.time() - started, 1),
        "device": "cuda" if s.cuda else "cpu",
        "world_size": world,
        "save_every_steps": every,
        "resumed_from_step": resume[1] if resume else None,
        "dropped_incomplete_checkpoints": dropped,
        "step_log": str(work_dir / STEP_LOG),
    }


def read_steps(path: Path) -> list[dict]:
    """The logged steps, the last line of each step kept (a resumed run may log a step twice)."""
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row["step"]] = row
    return [by_step[k] for k in sorted(by_step)]


def generated_tokens(steps: list[dict], completions_per_step: int) -> int:
    """Tokens generated over the logged steps: mean completion length x completions."""
    return int(sum((s.get("completions/mean_length") or 0) * completions_per_step for s in steps))
