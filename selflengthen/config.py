"""Up-front checks of the composed Hydra config, the seed pool and the model path. Every
problem is collected and reported at once, each with its fix, before any work starts."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selflengthen.errors import UserError
from selflengthen.evaluation.in_run import check_config as eval_problems
from selflengthen.quality import rule_problems
from selflengthen.stages.agentwrite import config_problems as agentwrite_problems
from selflengthen.stages.synth import SYNTHS
from selflengthen.prompting import LANGUAGES
from selflengthen.text import detect_language

EMBEDDED_TINY = "embedded:tiny"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Keys that change how a run is computed (a resumed run must keep them); the rest
# (iterations, engine placement, Ray, paths, debug) may change between invocations.
METHOD_KEYS = ("seed", "model", "loop", "train", "seeds", "agentwrite")
# Method keys added after runs were started: a saved config without one ran as with this value.
ADDED_METHOD_KEYS = {("loop", "synth"): "extend"}


def problems(cfg: DictConfig) -> list[str]:
    """Every problem in the config, each phrased as what is wrong and how to fix it."""
    out = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    need(isinstance(cfg.iterations, int) and cfg.iterations >= 1,
         f"iterations={cfg.iterations!r} must be a whole number >= 1 (e.g. iterations=4)")
    langs = list(cfg.model.languages)
    need(bool(langs) and all(lang in LANGUAGES for lang in langs),
         f"model.languages={langs} must be a non-empty list from {list(LANGUAGES)} (e.g. 'model.languages=[en]')")
    for lang in langs:
        need(lang in cfg.loop.quality, f"loop.quality has no rules for language {lang!r}; add loop.quality.{lang}")
    out += rule_problems(cfg.loop.quality)
    out += eval_problems(cfg)
    need(cfg.loop.synth in SYNTHS, f"loop.synth={cfg.loop.synth!r} must be one of {list(SYNTHS)} "
         "(extend: the paper's extender; agentwrite: LongWriter's plan-then-write; both)")
    out += agentwrite_problems(cfg.agentwrite)
    path = str(cfg.model.path)
    if path != EMBEDDED_TINY and not Path(path).expanduser().is_dir():
        need(bool(_HUB_ID.match(path)) and not path.startswith((".", "/", "~")),
             f"model.path={path!r} is neither a folder nor a hub id (org/name); "
             f"give an existing model folder, a hub id like Qwen/Qwen2.5-7B-Instruct, or {EMBEDDED_TINY}")
    if cfg.seeds.path is not None:
        need(Path(str(cfg.seeds.path)).expanduser().is_file(),
             f"seeds.path={cfg.seeds.path!r} is not a file; point it at a JSONL of "
             '{"instruction": ..., "language": ...} rows, or set seeds.path=null for the shipped seeds')
    a, g, e, t = cfg.loop.augment, cfg.loop.generate, cfg.loop.extend, cfg.train
    for key, value in [("loop.augment.new_per_language", a.new_per_language), ("loop.augment.tries", a.tries),
                       ("loop.generate.samples", g.samples), ("loop.generate.retries", g.retries),
                       ("loop.extend.attempts", e.attempts), ("loop.extend.retries", e.retries),
                       ("loop.extend.rounds", e.rounds), ("train.epochs", t.epochs), ("train.rank", t.rank)]:
        need(isinstance(value, (int, float)) and value >= 1, f"{key}={value!r} must be >= 1")
    need(0 <= a.min_words < a.max_words, f"loop.augment.min_words ({a.min_words}) must be below max_words ({a.max_words})")
    need(e.min_growth >= 1.0, f"loop.extend.min_growth={e.min_growth} must be >= 1.0 (the paper uses 1.2)")
    need(0 < cfg.loop.curate.line_keep_prob <= 1, "loop.curate.line_keep_prob must be in (0, 1] (the paper uses 0.8)")
    need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0")
    need(cfg.loop.sampling.max_tokens < cfg.model.max_model_len,
         f"loop.sampling.max_tokens ({cfg.loop.sampling.max_tokens}) must be below model.max_model_len "
         f"({cfg.model.max_model_len}); lower one or raise the other")
    need(cfg.engine.replicas == "auto" or (isinstance(cfg.engine.replicas, int) and cfg.engine.replicas >= 1),
         f"engine.replicas={cfg.engine.replicas!r} must be 'auto' or a whole number >= 1")
    need(int(cfg.engine.tensor_parallel_size) >= 1, "engine.tensor_parallel_size must be >= 1")
    need(cfg.engine.max_lora_rank >= cfg.train.rank,
         f"engine.max_lora_rank ({cfg.engine.max_lora_rank}) must be >= train.rank ({cfg.train.rank})")
    return out


def validate(cfg: DictConfig) -> None:
    found = problems(cfg)
    if len(found) == 1:
        raise UserError(f"config: {found[0]}")
    if found:
        raise UserError("config has %d problems:\n  - %s" % (len(found), "\n  - ".join(found)))


def method_config(cfg: DictConfig) -> dict:
    return _method(OmegaConf.to_container(cfg, resolve=True))


def saved_method(saved: dict) -> dict:
    """The method part of a run's saved config.yaml, comparable with `method_config`: keys
    added to the method since it was saved take the value the run had in effect."""
    saved = {k: (dict(v) if isinstance(v, dict) else v) for k, v in saved.items()}
    for (group, key), value in ADDED_METHOD_KEYS.items():
        if isinstance(saved.get(group), dict):
            saved[group].setdefault(key, value)
    return _method(saved)


def _method(container: dict) -> dict:
    out = {k: container.get(k) for k in METHOD_KEYS}
    if (out.get("loop") or {}).get("synth", "extend") == "extend":
        out.pop("agentwrite")  # AgentWrite's parameters change nothing unless it runs
    return out


def load_seeds(cfg: DictConfig) -> dict[str, list[str]]:
    """The seed pool by language: the user's JSONL (seeds.path) or the shipped seeds."""
    languages = list(cfg.model.languages)
    if cfg.seeds.path is None:
        files = [(resources.files("selflengthen") / "seeds" / f"{lang}.jsonl", lang) for lang in languages]
    else:
        files = [(Path(str(cfg.seeds.path)).expanduser(), None)]
    pool: dict[str, list[str]] = {lang: [] for lang in languages}
    for path, default_lang in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = str(row["instruction"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise UserError(f"seeds file {path} line {n}: expected a JSON object with an \"instruction\" "
                                f"({type(err).__name__}: {err}); fix that line") from err
            lang = row.get("language") or default_lang or detect_language(text)
            if lang in pool and text:
                pool[lang].append(text)
    thin = [lang for lang, items in pool.items() if len(items) < 2]
    if thin:
        raise UserError(f"the seed pool has fewer than 2 instructions for {thin}; add seeds in those languages "
                        f"to {cfg.seeds.path or 'the seeds file'} or drop them from model.languages")
    return pool
