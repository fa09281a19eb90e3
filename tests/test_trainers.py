"""The one training launcher (training/ray_train.py) and its trainer registry: each name
routes to its trainer's module and function, keeping the protocol; the launcher submits that
trainer on the single-process path and hands its name to the Ray Train workers; a made-up
trainer is one registry line; and `dpo`'s train step goes through the launcher. (The
trainers themselves run on the tiny model in test_dpo_cli.py, test_training_steps.py and
test_train_distributed.py.)"""
from __future__ import annotations

import inspect
import sys

import pytest
import ray.train  # imported before a test stands in for ray.remote: its import uses it
from hydra import compose, initialize_config_dir

from selflengthen.commands import dpo as command
from selflengthen.training import dpo, ray_train, sft
from tests.conftest import REPO
from tests.fakes import typed

PROTOCOL = ["base_model", "data_path", "out_dir", "init_adapter", "tcfg", "seed"]


class Submitted:
    """ray.remote(fn).options(...).remote(...) recorded instead of run."""

    def __init__(self):
        self.calls: list[dict] = []

    def remote(self, fn):
        calls = self.calls

        class Task:
            def options(self, **options):
                self.options_ = options
                return self

            def remote(self, *args, **kwargs):
                calls.append({"fn": fn, "options": self.options_, "args": args, "kwargs": kwargs})
                return "ref"

        return Task()


def tcfg(**over) -> dict:
    return {"workers": 1, "strategy": "ddp", "num_cpus": 1, "num_gpus": 1, **over}


def test_each_registered_trainer_is_its_modules_function_and_keeps_the_protocol():
    assert ray_train.trainer_function("sft") is sft.train_adapter
    assert ray_train.trainer_function("dpo") is dpo.train_dpo_adapter
    for name in ray_train.TRAINERS:
        params = inspect.signature(ray_train.trainer_function(name)).parameters
        positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert len(positional) == len(PROTOCOL), name  # base model, data, out dir, init adapter, settings, seed
        assert {"extra_callbacks", "save_dir"} <= {p.name for p in params.values() if p.kind is p.KEYWORD_ONLY}
    with pytest.raises(ValueError, match="no trainer named 'nope'.*sft, dpo"):
        ray_train.trainer_function("nope")


@pytest.mark.parametrize("name", ["sft", "dpo"])
def test_the_launcher_runs_the_named_trainer_alone_or_hands_its_name_to_ray_train(monkeypatch, name):
    submitted = Submitted()
    monkeypatch.setattr(ray_train.ray, "remote", submitted.remote)
    args = ("model", "data.jsonl", "out/adapter", None)
    assert ray_train.launch(*args, tcfg(num_gpus=0.5), 7, gpus=2, trainer=name) == "ref"
    alone = submitted.calls[-1]
    assert alone["fn"] is ray_train.trainer_function(name)
    # not retried by Ray: a trainer killed (for memory) stops the command, which resumes from its checkpoint
    assert alone["options"] == {"num_cpus": 1, "num_gpus": 0.5, "max_retries": 0}
    assert alone["args"] == (*args, tcfg(num_gpus=0.5), 7)
    ray_train.launch(*args, tcfg(workers=2), 7, gpus=0, trainer=name)
    workers = submitted.calls[-1]
    assert workers["fn"] is ray_train.fit and workers["kwargs"] == {"gpus": 0, "trainer": name}
    assert workers["options"] == {"num_cpus": 0, "num_gpus": 0, "max_retries": 0}  # fit only waits for its workers


def trained_here(base_model, data_path, out_dir, init_adapter, tcfg, seed, *, extra_callbacks=(), save_dir=None):
    """A made-up trainer keeping the protocol (it trains nothing)."""
    return {"trainer": "made-up", "out": save_dir or out_dir, "callbacks": len(extra_callbacks)}


def test_a_made_up_trainer_is_one_registry_line_on_both_paths(monkeypatch):
    monkeypatch.setitem(ray_train.TRAINERS, "made_up", f"{__name__}:trained_here")
    submitted = Submitted()
    monkeypatch.setattr(ray_train.ray, "remote", submitted.remote)
    ray_train.launch("model", "data.jsonl", "out/adapter", None, tcfg(), 0, gpus=0, trainer="made_up")
    assert submitted.calls[-1]["fn"] is sys.modules[__name__].trained_here
    # a Ray Train worker resolves the name it was handed (its report is Ray Train's: recorded here)
    reports = []
    monkeypatch.setattr(ray_train, "_report", lambda metrics, folder: reports.append((metrics, folder)))
    monkeypatch.setattr(ray_train, "_report_checkpoints", lambda: "callback")

    class Context:
        def get_world_rank(self):
            return 0

    monkeypatch.setattr(ray.train, "get_context", lambda: Context())
    ray_train._worker({"args": ("model", "data.jsonl", "out/adapter", None, tcfg(workers=2), 0),
                       "trainer": "made_up", "attempt": "abc"})
    (metrics, folder), = reports
    assert metrics == {"trainer": "made-up", "out": str(folder), "callbacks": 1}
    assert folder.name == "adapter-abc" and folder.parent.name == "adapter.trainer"


def test_the_dpo_train_step_goes_through_the_launcher(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        settings = typed(compose(config_name="dpo", overrides=["train.workers=2", "seed=5"]), "dpo")
    paths = command.DpoPaths(tmp_path / "job")
    launched = []

    def launch(*args, gpus, trainer):
        launched.append((args, gpus, trainer))
        return {"steps": 3, "pairs": 2}

    monkeypatch.setattr(command.workers, "init_ray", lambda ray_settings: None)
    monkeypatch.setattr(command.ray_train, "placement", lambda cfgs: (1.0, True))
    monkeypatch.setattr(command.ray_train, "launch", launch)
    monkeypatch.setattr(command.ray, "get", lambda ref: ref)
    info = command.train(settings, paths, "model", {"generator": "start/adapter"},
                         {"config_hash": "pairs-digest", "pairs": 2})
    (args, gpus, trainer), = launched
    assert trainer == "dpo" and gpus == 1.0
    assert args[:4] == ("model", str(paths.pairs), str(paths.adapter), "start/adapter") and args[5] == 5
    assert args[4]["workers"] == 2 and args[4]["beta"] == settings.dpo.train.beta  # train.* with dpo.train.* on top
    assert info["steps"] == 3 and paths.manifest("train").exists()


class Killed(RuntimeError):
    """Stands in for a kill right after a complete checkpoint."""


def kill_after_checkpoint(step: int):
    """A TRL callback (run after the checkpoint marker's) that stops the process's training at `step`."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Killed(f"killed after checkpoint {step}")

    return Kill()


@pytest.mark.slow
def test_dpo_continuing_an_adapter_resumes_from_its_checkpoint_and_saves_only_the_trained_adapter(
        tiny_model, tmp_path, compose_config):
    """The DPO trainer on the tiny model (CPU, in process), with the harness every trainer
    shares: an SFT adapter to continue, a training killed after its step-2 checkpoint, then
    the same call resuming from that checkpoint and saving the adapter it digested."""
    from safetensors.torch import load_file

    from selflengthen.store import artifacts
    from selflengthen.training import checkpoints
    from tests.fakes import typed

    settings = typed(compose_config("train.max_length=256", "train.save_every_steps=2", "train.rank=4",
                                    "train.alpha=8", "dpo.train.max_length=256", "dpo.train.max_steps=4",
                                    "dpo.train.learning_rate=1e-3", verb="dpo"), "dpo")
    dcfg = command.train_settings(settings)
    rows = [{"messages": [{"role": "user", "content": f"Write about topic {i}."},
                          {"role": "assistant", "content": f"Topic {i} is a module. " * 8}]} for i in range(4)]
    artifacts.write_jsonl(tmp_path / "sft.jsonl", rows)
    start = tmp_path / "start"
    sft.train_adapter(str(tiny_model), str(tmp_path / "sft.jsonl"), str(start), None,
                      {**dcfg, "learning_rate": 1e-3, "epochs": 1, "max_steps": 2, "save_every_steps": 0}, 0)
    pairs = [{"prompt": f"Write about topic {i}.", "chosen": f"Topic {i} is a module. " * 12, "rejected": "No."}
             for i in range(4)]
    artifacts.write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "adapter"
    args = (str(tiny_model), str(tmp_path / "pairs.jsonl"), str(out), str(start), dcfg, 0)
    with pytest.raises(Killed):
        dpo.train_dpo_adapter(*args, extra_callbacks=[kill_after_checkpoint(2)])
    work_dir = out.with_name("adapter.trainer")
    assert not out.exists() and checkpoints.last_complete(work_dir) == (work_dir / "checkpoint-2", 2)
    info = dpo.train_dpo_adapter(*args)
    assert info["resumed_from_step"] == 2 and info["steps"] == 4 and len(info["loss_curve"]) == 4
    assert info["reference"] == "a frozen copy of the starting adapter"
    saved = load_file(out / "adapter_model.safetensors")
    assert checkpoints.tensors_digest(saved) == info["adapter_digest"]
    assert saved.keys() == load_file(start / "adapter_model.safetensors").keys()
    assert not (out / "ref").exists() and not work_dir.exists()  # TRL's frozen copy is not saved; the work folder goes
