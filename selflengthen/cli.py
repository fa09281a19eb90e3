"""Command line: `python -m selflengthen VERB [ARGS ...]`, one verb per row of the verb
table (config/verbs.py): this module dispatches to the row's module, prints the usage text
built from the rows, checks the composed config (and the row's output folder) once before
a Hydra job, and names a sweep's jobs. User errors print one line (the problem and its fix)
and exit 2; `debug=true` (Hydra verbs) or `--debug` / SELFLENGTHEN_DEBUG=1 shows the
traceback."""
from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from selflengthen.config import verbs
from selflengthen.config.files import compose, conf_dir, missing_values
from selflengthen.config.names import name_problems, safe_name
from selflengthen.config.schema import VERBS as VERB_CONFIGS, unknown_key
from selflengthen.core.errors import UserError, memory_kill, sigterm_stops_like_ctrl_c, stopped_by_sigterm
from selflengthen.core.stopping import quiet_ending, set_kept
from selflengthen.store.artifacts import DISK_FULL, disk_error

# A verb's module (selflengthen/commands/) is imported only when the verb runs, on purpose:
# `--help`, a bad override and `inspect` answer without loading Ray, vLLM or torch.
USAGE_INDENT = 66  # where a verb's description lines start
MARGIN = " " * len("usage: ")
HELP_LINE = "run --help                          the config and its groups"


def usage() -> str:
    """`--help`: each verb's usage lines, in the table's order, then how to list the config."""
    lines = []
    for verb in verbs.VERBS:
        lines.append(f"python -m selflengthen {verb.usage[0]}")
        lines += [" " * (USAGE_INDENT - len(MARGIN)) + more for more in verb.usage[1:]]
    lines.append(f"python -m selflengthen {HELP_LINE}")
    return "usage: " + f"\n{MARGIN}".join(lines)


def _debugging() -> bool:
    return os.environ.get("SELFLENGTHEN_DEBUG", "") not in ("", "0")


def _fail(err: BaseException) -> None:
    quiet_ending()
    print(f"selflengthen: error: {err}", file=sys.stderr)
    sys.exit(2)


def entry(verb: verbs.Verb):
    """The verb's entry function (its module is imported now)."""
    return getattr(importlib.import_module(verb.module), verb.entry)


def hydra_job(verb: verbs.Verb):
    """The Hydra job of a verb: a sweep's job named (for a row that sweeps), then the verb's
    entry under the one-line user errors."""
    def job(cfg) -> None:
        if verb.sweeps:
            name_sweep_job(cfg)
        with user_errors(cfg.debug, verb.kept):
            entry(verb)(cfg)

    return job


def name_sweep_job(cfg) -> None:
    """In a `-m` sweep without run.name=: one sweep folder, named after the sweep, with one
    run folder per job (named after its swept values), grouped in the trackers."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    hc = HydraConfig.get()
    if hc.mode.name == "MULTIRUN" and not any(o.startswith("run.name=") for o in hc.overrides.task):
        with open_dict(cfg):  # one sweep folder, named after the sweep, with one run folder per job
            cfg.tracking.group = cfg.tracking.group or sweep_name(cfg, hc)  # the trackers group the jobs
            cfg.paths.iterations_dir = str(Path(str(cfg.paths.iterations_dir)) / sweep_name(cfg, hc))
            cfg.run.name = _safe(",".join(sorted(_sweep_overrides(hc))) or str(hc.job.num))


@contextmanager
def user_errors(debug: bool, kept: str):
    """A user error is one line and exit 2 (the traceback only with debug); Ctrl-C says
    what is kept and how to resume."""
    set_kept(kept)  # for the line of a stop whose handler cannot run (core/stopping.py)
    try:
        yield
    except UserError as err:
        if debug or _debugging():
            raise
        _fail(err)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (errors.Terminated)
        what, code = ("terminated (SIGTERM)", 143) if stopped_by_sigterm(err) else ("interrupted", 130)
        quiet_ending()
        print(f"selflengthen: {what}; {kept}, run the same command to resume", file=sys.stderr)
        sys.exit(code)
    except OSError as err:  # a full disk anywhere (artifacts.py names the folder for its own writes)
        if err.errno not in DISK_FULL or debug or _debugging():
            raise
        _fail(disk_error(err, Path(err.filename or "the output folder/?")))
    except Exception as err:  # a worker Ray killed for memory: one line, what is kept, how to resume
        line = memory_kill(err)
        if line is None or debug or _debugging():
            raise
        _fail(f"{line}; {kept}, run the same command to resume")


def _safe(text: str) -> str:
    """A job's overrides as one folder name (config/names.py's rule)."""
    return safe_name(text.replace("/", "-").replace("=", "-").replace(",", "_"))


_SWEPT: list[str] = []  # the keys a `run -m` sweeps over (read from the command line)


def swept_keys(argv: list[str]) -> list[str]:
    """Keys with several values on the command line (seed=0,1; loop.synth=a,b; range(...))."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports a bad override itself, in one line
        return []
    return sorted({o.key_or_group for o in parsed if o.is_sweep_override()})


def _sweep_overrides(hc) -> list[str]:
    """This job's values of the swept keys (each job sees every override, swept or not)."""
    return [o.lstrip("+~") for o in hc.overrides.task if "=" in o and o.lstrip("+~").split("=", 1)[0] in _SWEPT]


def sweep_name(cfg, hc) -> str:
    """`<run.name>-sweep-<swept keys>` (e.g. tiny-sweep-seed): rerunning the same sweep
    resumes its runs; `sweep_name=...` names it explicitly."""
    if cfg.get("sweep_name") is not None:  # checked by precheck: one folder name
        return str(cfg.sweep_name)
    base = "sweep" if any(k.startswith("model") for k in _SWEPT) else f"{cfg.run.name}-sweep"
    return _safe(f"{base}-{'-'.join(_SWEPT) or 'jobs'}")


def run_argument(argv: list[str], verb: str = "finalize") -> list[str]:
    """`finalize RUN ...`: RUN (a run name under paths.iterations_dir, or a run folder)
    becomes the overrides run.name= (and paths.iterations_dir= for a folder)."""
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise UserError(f"name the run to {verb}: python -m selflengthen {verb} RUN [KEY=VALUE ...] "
                        "(RUN: a run name under iterations/, or a run folder)")
    run, rest = argv[0], argv[1:]
    folder = Path(run).expanduser()
    if (folder / "config.yaml").is_file() and not any(a.startswith("paths.iterations_dir=") for a in rest):
        return [f"paths.iterations_dir={folder.resolve().parent}", f"run.name={folder.resolve().name}", *rest]
    return [f"run.name={run.rstrip('/')}", *rest]


def hydra_verb(argv: list[str], verb: verbs.Verb) -> None:
    """Run the verb's entry as a Hydra job with `conf/<verb.config>.yaml` and the overrides."""
    import hydra

    try:
        conf = conf_dir()
    except UserError as err:
        _fail(err)
    if not any(a in ("-h", "--help", "--hydra-help") for a in argv):
        try:
            precheck(argv, verb.config, verb.output_key)
        except UserError as err:
            if _debugging():
                raise
            _fail(err)
    main = hydra.main(config_path=str(conf), config_name=verb.config, version_base="1.3")(hydra_job(verb))
    _SWEPT[:] = swept_keys(argv)
    sys.argv = [sys.argv[0]] + argv
    main()


def precheck(argv: list[str], config_name: str, output_key: str | None = None) -> None:
    """Compose the config once (config/files.compose) before Hydra runs the job, so that an
    unknown key or group option, or an output folder (`output_key`'s) that cannot be
    created, is one line (Hydra itself prints a report of several lines, or a traceback
    when it cannot create its log folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(f"bad override: {_one_line(err)}") from err
    plain = [text for text, o in zip(overrides, parsed)  # a sweep's values are checked by Hydra per job
             if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    try:
        cfg = compose(config_name, plain, return_hydra_config=True)
        multirun = any(a in ("-m", "--multirun") for a in argv)
        out = OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    except (HydraException, OmegaConfBaseException) as err:
        unknown = re.match(r"Could not override '([^']+)'", str(err))
        if unknown:
            raise UserError(unknown_key(unknown[1])) from err  # the schema's own line: `+KEY=VALUE` is refused too
        raise UserError(f"{_one_line(err)} (python -m selflengthen run --help shows every key and group)") from err

    root = next(VERB_CONFIGS[v.name] for v in verbs.VERBS if v.config == config_name and v.name in VERB_CONFIGS)
    bad_names = name_problems(root, lambda key: OmegaConf.select(cfg, key, default=None))
    if bad_names:  # before anything is created: Hydra's log folder goes under run.name
        raise UserError(f"config: {bad_names[0]}")
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    unset = [k for k in missing_values(cfg) if k not in swept]
    if unset:
        raise UserError(f"config: {', '.join(unset)} must be set (the chosen preset leaves "
                        f"{'it' if len(unset) == 1 else 'them'} as ???); add "
                        + " ".join(f"{k}=VALUE" for k in unset) + " to the command")
    problem = unwritable(Path(str(out))) if output_key else None
    if problem:
        raise UserError(f"cannot create the output folder {out}: {problem}; set {output_key}= to a folder you can write")


def unwritable(folder: Path) -> str | None:
    """Why `folder` cannot be created and written, or None. It is created here (Hydra
    creates it next anyway): only the filesystem knows, e.g. under /proc or a read-only mount."""
    p = folder.expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    try:
        folder.expanduser().absolute().mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    return None


def _one_line(err: BaseException) -> str:
    """Hydra's multi-line message as one line (its debugging hints left out)."""
    parts: list[str] = []
    for line in str(err).splitlines():
        text = line.strip()
        if not text or text.startswith(("full_key:", "object_type=", "Set the environment variable",
                                          "Config search path", "provider=")):
            if text.startswith("Config search path"):
                break
            continue
        if line.startswith("\t") and parts:  # a list of options
            parts[-1] += ("" if parts[-1].endswith(":") else ",") + " " + text
        else:
            parts.append(text)
    return "; ".join(parts)


def plain_verb(argv: list[str], verb: verbs.Verb) -> None:
    """A verb that is no Hydra job: its own `--help` (or its argument parser's), the config
    checked once when it composes one, then its entry with the arguments."""
    if verb.help and any(a in ("-h", "--help") for a in argv):
        print(verb.help)
        return
    debug = "--debug" in argv
    if verb.config:
        try:
            precheck([a for a in argv if a != "--debug"], verb.config, verb.output_key)  # a bad override: one line
        except UserError as err:
            if debug or _debugging():
                raise
            _fail(err)
    with user_errors(debug, verb.kept):
        entry(verb)(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sigterm_stops_like_ctrl_c()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    verb = verbs.named(command)
    if verb is None:
        _fail(UserError(f"unknown command {command!r}; use one of {', '.join(v.name for v in verbs.VERBS)} "
                        "(python -m selflengthen --help)"))
    if verb.takes_run:
        try:
            rest = run_argument(rest, verb.name)
        except UserError as err:
            _fail(err)
    if verb.hydra:
        hydra_verb(rest, verb)
    else:
        plain_verb(rest, verb)
