"""Nothing built that no step needs (issue 39): a step's record names the model by
`model_key` (the folder an embedded model has once built), and the model is built only when
a step still to run serves or trains with it. A rerun of a finished eval, dpo or rl job with
the model cache gone builds nothing (the cache stays empty) and reuses every step: the
recorded model is the same name the built model has. The engines and trainers here are
scripted stand-ins (the logic under test is which steps run, not what they compute)."""
from __future__ import annotations

import types
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from selflengthen.models import resolve
from selflengthen.store import artifacts
from tests.fakes import ScriptedEngine, typed


def linked_cache(tmp_path: Path, tiny_model: Path) -> Path:
    """A cache folder holding only the installed tiny model (a link): `ready()` finds it built."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / tiny_model.name).symlink_to(tiny_model)
    return cache


def emptied(cache: Path) -> Path:
    """The cache with its model gone, as on a fresh machine."""
    for entry in cache.iterdir():
        entry.unlink()
    return cache


def never(*args, **kwargs):
    raise AssertionError("nothing may be served, trained or started here")


@asynccontextmanager
async def no_engine(*args, **kwargs):
    never()
    yield


def test_model_key_names_the_built_folder_without_building(tmp_path, compose_config, model_cache, tiny_model):
    empty = tmp_path / "empty"
    settings = typed(compose_config(f"paths.cache_dir={empty}", verb="eval"), "eval")
    model = settings.model
    assert model.path == resolve.EMBEDDED_TINY
    assert resolve.model_key(model, str(model_cache)) == resolve.resolve_model(model, str(model_cache)) \
        == str(tiny_model)
    assert resolve.model_key(model, str(empty)) == str(empty / tiny_model.name) and not empty.exists()
    folder = tmp_path / "mine"
    folder.mkdir()
    for path, key in ((str(folder), str(folder)), ("org/some-model", "org/some-model")):
        assert resolve.model_key(model.model_copy(update={"path": path}), str(empty)) == key
    serve = resolve.served(None, model, settings.loop.sampling, settings.engine, settings.paths)
    assert serve.path == str(empty / tiny_model.name) and not empty.exists()  # named, not built


def test_a_finished_eval_reruns_with_the_model_cache_gone(tmp_path, compose_config, monkeypatch, tiny_model):
    from selflengthen.commands import eval as command

    cache = linked_cache(tmp_path, tiny_model)
    engine = ScriptedEngine(lambda request, sampling: "word " * 20)

    @asynccontextmanager
    async def scripted(model_path, *args):
        assert model_path == str(cache / tiny_model.name)
        yield engine

    args = ("benchmark=heldout_tiny", "limit=2", f"out_dir={tmp_path / 'eval'}", "name=mine",
            f"paths.cache_dir={cache}")
    monkeypatch.setattr(command, "serving", scripted)
    [(summary, out)] = command.run_eval(compose_config(*args, verb="eval"))
    assert engine.requests and summary["items"] == 2
    recorded = artifacts.read_json(out / "steps" / "predict.json")
    assert recorded["made_with"]["model"] == str(cache / tiny_model.name)

    monkeypatch.setattr(command, "serving", no_engine)
    emptied(cache)
    [(again, _)] = command.run_eval(compose_config(*args, verb="eval"))
    assert again["mean_words"] == summary["mean_words"] and list(cache.iterdir()) == []
    assert artifacts.read_json(out / "steps" / "predict.json")["made_with"] == recorded["made_with"]


def test_a_finished_dpo_reruns_with_the_model_cache_gone(tmp_path, compose_config, monkeypatch, tiny_model):
    from selflengthen.commands import dpo as command
    from tests.test_dpo_samples import writer

    cache = linked_cache(tmp_path, tiny_model)
    engine = ScriptedEngine(writer)

    @asynccontextmanager
    async def scripted(model_path, *args):
        assert model_path == str(cache / tiny_model.name)
        yield engine

    def launch(model_path, pairs, adapter, init, tcfg, seed, **kwargs):
        assert model_path == str(cache / tiny_model.name)
        artifacts.write_json(Path(adapter) / "adapter_config.json", {"r": 8})
        return {"steps": 1}

    args = ("benchmark=heldout_tiny", "limit=2", "dpo.samples_per_instruction=3", f"out_dir={tmp_path / 'dpo'}",
            "name=job", f"paths.cache_dir={cache}",
            "dpo.penalties=[]")  # the scripted samples are one word repeated: penalised, every one would score 0
    monkeypatch.setattr(command, "serving", scripted)
    monkeypatch.setattr(command.workers, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(command.ray_train, "placement", lambda *a, **k: (0, None))
    monkeypatch.setattr(command.ray_train, "launch", launch)
    monkeypatch.setattr(command, "ray", types.SimpleNamespace(get=lambda x: x, exceptions=command.ray.exceptions))
    first, paths = command.run_dpo(compose_config(*args, verb="dpo"))
    assert engine.requests and first["train"]["model"] == str(cache / tiny_model.name)
    records = {name: artifacts.read_json(paths.manifest(name)) for name in command.STEPS}

    emptied(cache)
    for where, name in ((command, "serving"), (command.workers, "init_ray"), (command.ray_train, "launch")):
        monkeypatch.setattr(where, name, no_engine if name == "serving" else never)
    again, _ = command.run_dpo(compose_config(*args, verb="dpo"))
    assert again == first and list(cache.iterdir()) == []
    assert {name: artifacts.read_json(paths.manifest(name)) for name in command.STEPS} == records


def test_a_finished_rl_reruns_with_the_model_cache_gone(tmp_path, compose_config, monkeypatch, tiny_model):
    """The finished manifest as run_rl writes it (its step's fields, made with the model's
    name); with the cache empty the rerun finds it done, builds nothing and starts no Ray;
    with another model setting it is refused as before, still building nothing."""
    from selflengthen.commands import rl as command
    from selflengthen.core.errors import UserError
    from selflengthen.store import steps

    cache = tmp_path / "cache"
    cache.mkdir()
    args = ("limit=4", f"out_dir={tmp_path / 'rl'}", "name=job", f"paths.cache_dir={cache}")
    settings = typed(compose_config(*args, verb="rl"), "rl")
    paths = command.RlPaths(tmp_path / "rl" / "job")
    rows, _ = command.prompt_rows(settings)
    tcfg = command.trainer_settings(settings)
    step, _ = command.train_step(paths, {
        "prompts": artifacts.config_hash(rows), "model": str(cache / tiny_model.name), "init": None,
        "train": command.made_with_train(tcfg), "seed": settings.seed})
    artifacts.write_json(paths.adapter / "adapter_config.json", {"r": 8})
    artifacts.write_json(paths.manifest, {"verb": "rl", **step.fields(), "model": step.made_with["model"]})
    monkeypatch.setattr(command.workers, "init_ray", never)
    monkeypatch.setattr(command.ray_train, "launch", never)

    done = command.run_rl(compose_config(*args, verb="rl"))
    assert done["settings_hash"] == step.fields()["settings_hash"] and list(cache.iterdir()) == []
    with pytest.raises(UserError, match=r"rl's train step .* \(changed: seed\)"):
        command.run_rl(compose_config(*args, "seed=5", verb="rl"))
    assert list(cache.iterdir()) == [] and steps.reusable(step)
