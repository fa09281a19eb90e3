"""Distributed training and trainer checkpoints (training/): the config rules of
train.workers / strategy / cpu_offload / save_every_steps and the cluster placement (unit);
one adapter trained by two Ray Train workers on the tiny model (gloo); and a training
SIGKILLed after its first checkpoint that resumes from it (slow, real stack)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selflengthen import config, preflight
from selflengthen.config import schema
from selflengthen.preflight import checks
from selflengthen.core.errors import UserError
from selflengthen.engines import workers
from selflengthen.training import checkpoints, ray_train, strategy
from tests.conftest import REPO, kill_session_when, run_cli, run_watched

CONF = REPO / "conf"


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train_cfg(*overrides: str) -> dict:
    return workers.with_cpu_threads(OmegaConf.to_container(compose_cfg(*overrides).train, resolve=True))


# --- config rules (unit) -------------------------------------------------------------------

def test_defaults_keep_the_single_process_path():
    tcfg = train_cfg()
    assert (tcfg["workers"], tcfg["strategy"], tcfg["cpu_offload"]) == (1, "ddp", False)
    assert tcfg["save_every_steps"] > 0
    assert not ray_train.uses_ray_train(tcfg)
    assert ray_train.uses_ray_train({**tcfg, "workers": 2})
    assert ray_train.uses_ray_train({**tcfg, "strategy": "fsdp"})  # a sharded strategy always goes through Ray Train


@pytest.mark.parametrize("override, line", [
    ("train.workers=0", "train.workers=0 must be >= 1 (e.g. train.workers=2)"),
    ("train.workers=two", "train.workers='two' must be a whole number"),
    ("train.strategy=zero3", "train.strategy='zero3' must be ddp, fsdp or deepspeed"),
    ("train.cpu_offload=maybe", "train.cpu_offload='maybe' must be true or false"),
    ("train.save_every_steps=-1", "train.save_every_steps=-1 must be >= 0"),
    ("train.cpu_offload=true", "train.cpu_offload=true needs train.strategy=fsdp or train.strategy=deepspeed"),
])
def test_each_bad_training_placement_value_is_one_line(override, line):
    found = preflight.problems(compose_cfg(override))
    assert len(found) == 1 and found[0].startswith(line), found


def test_deepspeed_not_installed_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None)
    found = preflight.problems(compose_cfg("train.strategy=deepspeed", "train.cpu_offload=true"))
    assert found == ["train.strategy=deepspeed needs the deepspeed package, which is not installed: "
                     "pip install deepspeed (or use train.strategy=fsdp)"]
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: object())
    assert preflight.problems(compose_cfg("train.strategy=deepspeed")) == []
    assert preflight.problems(compose_cfg("train.strategy=fsdp", "train.cpu_offload=true")) == []


@pytest.mark.skipif(__import__("importlib").util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
def test_deepspeed_missing_stops_the_cli_with_one_line(tmp_path):
    proc = run_cli("run", "train.strategy=deepspeed", f"paths.iterations_dir={tmp_path}", cwd=REPO)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines[-1] == ("selflengthen: error: config: train.strategy=deepspeed needs the deepspeed package, "
                         "which is not installed: pip install deepspeed (or use train.strategy=fsdp)"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_saved_before_these_keys_resumes_with_the_defaults():
    cfg = compose_cfg()
    saved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("workers", "strategy", "cpu_offload", "save_every_steps"):
        del saved["train"][key]
    today = schema.Config.model_validate(OmegaConf.to_container(cfg, resolve=True)).method
    assert config.saved_method(saved, "config.yaml") == today


def test_placement_needs_gpus_for_sharded_strategies_and_room_for_the_workers(monkeypatch):
    cpus_only = {"CPU": 2.0}
    monkeypatch.setattr(ray_train.ray, "cluster_resources", lambda: cpus_only)
    for name in ("fsdp", "deepspeed"):
        with pytest.raises(UserError) as err:
            ray_train.placement([train_cfg(f"train.strategy={name}")])
        assert str(err.value) == (f"train.strategy={name} needs GPUs and the Ray cluster has none; "
                                  "use train.strategy=ddp (the default) on CPUs")
    with pytest.raises(UserError, match=r"train.workers=3 x train.num_cpus=1 needs 3 CPUs for one adapter "
                                        r"and the Ray cluster has 2"):
        ray_train.placement([train_cfg("train.workers=3")])
    two = train_cfg("train.workers=2")
    assert ray_train.placement([two]) == (0, True)
    assert ray_train.placement([two, two]) == (0, False)  # the two adapters train one after the other
    one = train_cfg()
    assert ray_train.placement([one, one]) == (0, True)  # today's behaviour: both at once
    monkeypatch.setattr(ray_train.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    with pytest.raises(UserError, match=r"needs 8 GPUs for one adapter and the Ray cluster has 4"):
        ray_train.placement([train_cfg("train.workers=8")])
    assert ray_train.placement([train_cfg("train.workers=2", "train.strategy=fsdp")] * 2) == (4.0, True)


def test_strategies_become_trl_arguments():
    ddp = strategy.sft_kwargs(train_cfg(), cuda=False)
    assert ddp == {"gradient_checkpointing": False, "ddp_find_unused_parameters": False}
    fsdp = strategy.sft_kwargs(train_cfg("train.strategy=fsdp", "train.cpu_offload=true"), cuda=True)
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["cpu_offload"] is True
    # the model's gradient checkpointing: FSDP's wrapper would hide the LoRA weights from PEFT's save
    assert fsdp["gradient_checkpointing"] is True and "activation_checkpointing" not in fsdp["fsdp_config"]
    ds = strategy.sft_kwargs(train_cfg("train.strategy=deepspeed", "train.cpu_offload=true"), cuda=True)
    zero = ds["deepspeed"]["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == "cpu" == zero["offload_optimizer"]["device"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # rank 0 can save a whole adapter
    plain = strategy.sft_kwargs(train_cfg("train.strategy=deepspeed"), cuda=True)["deepspeed"]["zero_optimization"]
    assert "offload_param" not in plain


def test_only_complete_checkpoints_are_resumed_from(tmp_path):
    assert checkpoints.last_complete(tmp_path / "missing") is None
    for step, done in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if done:
            (folder / checkpoints.MARKER).write_text("{}")
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray Train's file beside them
    assert checkpoints.last_complete(tmp_path) == (tmp_path / "checkpoint-4", 4)
    assert checkpoints.drop_incomplete(tmp_path) == ["checkpoint-6"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4",
                                                         "checkpoint_manager_snapshot.json"]


def test_a_worker_failure_comes_back_as_one_line_or_as_the_non_finite_loss():
    from ray.train.v2.api.exceptions import WorkerGroupError

    from selflengthen.training.harness import NonFiniteLoss

    nan = WorkerGroupError("rank 1 failed", {1: NonFiniteLoss("the training loss became nan at step 3; lower it")})
    err = ray_train._worker_error(nan)
    assert isinstance(err, NonFiniteLoss) and str(err) == "the training loss became nan at step 3; lower it"
    other = ray_train._worker_error(WorkerGroupError("x", {0: ValueError("Traceback ...\nValueError: bad shape")}))
    assert type(other) is RuntimeError and str(other) == "a training worker failed: ValueError: bad shape"


def test_schema_declares_the_new_keys():
    fields = schema.Train.model_fields
    assert {"workers", "strategy", "cpu_offload", "save_every_steps"} <= set(fields)


# --- on the tiny model ---------------------------------------------------------------------

DRIVER = r"""
import json, sys
import ray
from selflengthen.training import ray_train
a = json.loads(sys.argv[1])
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
gpus, _ = ray_train.placement([a["tcfg"]])
info = ray.get(ray_train.launch(a["model"], a["data"], a["out"], None, a["tcfg"], 0, gpus=gpus))
with open(a["info"], "w") as f:
    json.dump(info, f)
"""


def write_sft(path: Path, n: int) -> None:
    """n chat examples of ~60-100 tokens (the tiny model's byte-level BPE)."""
    words = "the module returns a list of values for each call and the object keeps its state".split()
    rows = [{"messages": [{"role": "user", "content": f"Write about topic number {i}."},
                          {"role": "assistant", "content": " ".join(words[(i + j) % len(words)]
                                                                  for j in range(40 + i % 7))}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def driver_args(tmp_path: Path, model: Path, examples: int, *overrides: str) -> tuple[list[str], Path]:
    data = tmp_path / "sft.jsonl"
    write_sft(data, examples)
    tcfg = train_cfg("train.epochs=1", "train.logging_steps=1", "train.max_length=256", "train.num_cpus=1",
                     *overrides)
    args = {"model": str(model), "data": str(data), "out": str(tmp_path / "adapters" / "generator"),
            "tcfg": tcfg, "info": str(tmp_path / "info.json")}
    return [sys.executable, "-c", DRIVER, json.dumps(args)], Path(args["out"])


def run_driver(cmd: list[str], tmp_path: Path) -> dict:
    proc = run_watched(cmd, cwd=REPO)  # stopped by the progress watchdog, not by a time limit
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / "info.json").read_text())


def kill_after_checkpoint(cmd: list[str], work_dir: Path, log: Path) -> None:
    """Run the driver in a session of its own; SIGKILL the whole session (driver, Ray, the
    trainers) as soon as a complete trainer checkpoint exists."""
    kill_session_when(cmd, lambda: checkpoints.last_complete(work_dir), log, "training", watch=(work_dir,))


@pytest.mark.slow
def test_two_workers_killed_resume_from_the_last_complete_checkpoint_and_rank0_saves_what_they_trained(
        tmp_path, tiny_model):
    """2 Ray Train workers (gloo, 1 CPU each), killed as soon as a checkpoint is complete, a
    half-written checkpoint planted, then rerun. (One worker, killed inside a real run, is in
    tests/test_crash_points.py.)"""
    from safetensors.torch import load_file

    workers, examples = 2, 24
    total = examples // workers
    cmd, out = driver_args(tmp_path, tiny_model, examples, f"train.workers={workers}", "train.save_every_steps=3")
    work_dir = out.with_name(out.name + ".trainer")
    kill_after_checkpoint(cmd, work_dir, tmp_path / "killed.log")
    assert not out.exists()  # killed before the adapter was saved
    last = checkpoints.last_complete(work_dir)
    assert last is not None and 3 <= last[1] < total
    half_written = work_dir / f"checkpoint-{last[1] + 3}"  # what a kill mid-save leaves: no marker
    half_written.mkdir(exist_ok=True)
    (half_written / "adapter_model.safetensors").write_bytes(b"torn")

    info = run_driver(cmd, tmp_path)
    assert info["resumed_from_step"] == last[1] and info["resumed_from"] == str(last[0])
    assert f"checkpoint-{last[1] + 3}" in info["dropped_incomplete_checkpoints"]
    assert info["steps"] == total  # the whole schedule, not a fresh one from the resumed step
    assert len(info["loss_curve"]) == total  # one logged loss per step: the steps before the kill are kept
    # both workers took part after the resume, each on its own share of the remaining batches
    assert info["world_size"] == workers and [w["rank"] for w in info["workers"]] == [0, 1]
    assert all(w["micro_batches"] == total - last[1] for w in info["workers"])
    # together they covered the remaining examples once: 1 sequence per worker per step
    assert sum(w["sequences"] for w in info["workers"]) == (total - last[1]) * workers
    # DDP kept the replicas equal, and the saved adapter is exactly what the ranks reported
    assert {w["adapter_digest"] for w in info["workers"]} == {info["adapter_digest"]}
    saved = load_file(out / "adapter_model.safetensors")
    assert checkpoints.tensors_digest(saved) == info["adapter_digest"]
    assert any(float(t.abs().sum()) > 0 for name, t in saved.items() if "lora_B" in name)  # it trained
    assert info["ray_train"]["checkpoint"].startswith("adapter-") and info["ray_train"]["workers"] == workers
    assert not work_dir.exists()  # the work folder goes once the adapter is in place
