"""Up-front checks of a verb's composed Hydra config, before any work starts: every value's
type and range (config/schema.py), the rules that look at files and the environment (the
model folder, the seeds file, installed packages), and the rules a feature hands in as a
FeatureCheck from the command that runs it (`settings(cfg, "run", in_run.CONFIG_CHECK)`).
Every problem is reported at once, each with its fix; then `settings` gives the verb its
frozen typed settings, the one object the code reads from there on. Every verb builds its
settings here: the composed config goes no further than the verb's door."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selflengthen.config import files, schema, verbs
from selflengthen.config.features import FeatureCheck
from selflengthen.core import suggested
from selflengthen.core.errors import UserError
from selflengthen.models import model_check
from selflengthen.models.resolve import EMBEDDED

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def problems(cfg: DictConfig, *features: FeatureCheck, verb: str = "run", here: bool = True) -> list[str]:
    """Every problem in the config, each phrased as what is wrong and how to fix it: first
    each value's type and range (schema.py), then the rules that join several values or
    look at files (the model folder, the seeds file; only `here`, for a verb that runs on
    this machine), then the given features' rules; a rule whose values have a bad type is
    left out (that value is reported already)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    typed = schema.check(container, verb)
    out = [line for _, line in typed]
    bad = {key for key, _ in typed}

    def ok(*keys: str) -> bool:  # no type or range problem at or under these keys
        return not any(b == k or b.startswith(k + ".") or k.startswith(b + ".") for b in bad for k in keys)

    def need(good: bool, message: str) -> None:
        if not good:
            out.append(message)

    langs = [lang for lang in cfg.model.languages if isinstance(lang, str)] \
        if OmegaConf.is_list(cfg.model.languages) else []
    if ok("loop.quality"):
        for lang in langs:
            need(lang in cfg.loop.quality, f"loop.quality has no rules for language {lang!r}; add loop.quality.{lang}")
    context = None
    if here and ok("model.path"):
        found, context = _model_path_problems(str(cfg.model.path))
        out += found
    if here and ok("seeds.path") and cfg.seeds.path is not None:
        need(Path(str(cfg.seeds.path)).expanduser().is_file(),
             f"seeds.path={cfg.seeds.path!r} is not a file; point it at a JSONL of "
             '{"instruction": ..., "language": ...} rows, or set seeds.path=null for the shipped seeds')
    if ok("model.max_model_len"):
        window = cfg.model.max_model_len
        need(context is None or window <= context,
             f"model.max_model_len ({window}) is above the model's context ({context} positions in its "
             f"config.json); set model.max_model_len={context} or lower")
        if ok("loop.sampling.max_tokens"):  # the engines cap each request's max_tokens to the room left
            need(cfg.loop.sampling.max_tokens < window,
                 f"loop.sampling.max_tokens ({cfg.loop.sampling.max_tokens}) must be below model.max_model_len "
                 f"({window}); lower one or raise the other")
    if here and ok("train.strategy") and cfg.train.strategy == "deepspeed" \
            and importlib.util.find_spec("deepspeed") is None:
        out.append("train.strategy=deepspeed needs the deepspeed package, which is not installed: "
                   f"{suggested.PIP_INSTALL} deepspeed (or use train.strategy=fsdp)")
    engine = schema.ENGINE_TYPES.get(cfg.engine.kind)  # a server elsewhere (openai) sets its own LoRA slots
    if ok("engine.max_lora_rank", "train.rank") and engine is not None and engine.serves_local_weights:
        need(cfg.engine.max_lora_rank >= cfg.train.rank,
             f"engine.max_lora_rank ({cfg.engine.max_lora_rank}) must be >= train.rank ({cfg.train.rank})")
    root = schema.VERBS[verb]
    for feature in features:  # e.g. eval.* inside a run; the other verbs do not run it
        if ok(*feature.keys):
            out += feature.problems(*(schema.typed_slice(root, container, key) for key in feature.keys))
    return out


def _model_path_problems(path: str) -> tuple[list[str], int | None]:
    """A model folder must hold a model; a hub id must be cached when offline."""
    if path in EMBEDDED:
        return [], None
    folder = Path(path).expanduser()
    if folder.is_dir():
        return model_check.folder_problems(folder)
    if not _HUB_ID.match(path) or path.startswith((".", "/", "~")):
        return [f"model.path={path!r} is neither a folder nor a hub id (org/name); "
                f"give an existing model folder, a hub id like Qwen/Qwen2.5-7B-Instruct, "
                f"or one of {list(EMBEDDED)}"], None
    return model_check.hub_problems(path)


def validate(cfg: DictConfig, *features: FeatureCheck, verb: str = "run", here: bool = True) -> None:
    """problems() as one UserError; the loop adds its in-run evaluation's check, the other
    verbs (eval, dpo, agentwrite, finalize) do not run it."""
    found = problems(cfg, *features, verb=verb, here=here)
    if len(found) == 1:
        raise UserError(f"config: {found[0]}")
    if found:
        raise UserError("config has %d problems:\n  - %s" % (len(found), "\n  - ".join(found)))


def settings(cfg: DictConfig, verb: str, *features: FeatureCheck, here: bool = True) -> schema.Config:
    """The verb's composed config as frozen typed settings, once, at the verb's entry: every
    problem reported together first (validate), then the typed object the code reads.
    `here=False` for a verb that only reads the settings (estimate: it sizes a run that
    may go elsewhere): the model folder, the seeds file and the packages are not checked."""
    validate(cfg, *features, verb=verb, here=here)
    return schema.VERBS[verb].model_validate(OmegaConf.to_container(cfg, resolve=True))


def composed(verb: str, overrides: list[str], *features: FeatureCheck) -> schema.Config:
    """The verb's typed settings from its conf/ file and Hydra overrides, as its entry builds
    them (the same composition, then settings()): for a script that runs a verb's parts."""
    return settings(files.compose(verbs.named(verb).config, list(overrides)), verb, *features)
