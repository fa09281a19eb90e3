"""Command line: `python -m selflengthen run|eval|finalize [hydra overrides]` and
`python -m selflengthen inspect [RUN ...]`. User errors print one line (the problem and
its fix) and exit 2; `debug=true` (run) or `--debug` / SELFLENGTHEN_DEBUG=1 shows the
traceback."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from selflengthen.config.files import missing_values
from selflengthen.config.schema import unknown_key
from selflengthen.config.files import conf_dir
from selflengthen.core.errors import Terminated, UserError, sigterm_stops_like_ctrl_c
from selflengthen.store.artifacts import DISK_FULL, disk_error

# Each verb's module (selflengthen/commands/) is imported inside its job function, on purpose:
# `--help`, a bad override and `inspect` answer without loading Ray, vLLM or torch.
VERBS = ("run", "eval", "finalize", "agentwrite", "dpo", "rl", "inspect", "estimate")
USAGE = """usage: python -m selflengthen run [KEY=VALUE ...] [-m]   run the loop (Hydra overrides)
       python -m selflengthen eval benchmark=NAME|[A,B] [data=PATH] [adapter=RUN/iter_K | predictions=FILE] [KEY=VALUE ...]
                                                                  score a model on a long-output benchmark
       python -m selflengthen dpo [data=PATH] [adapter=RUN/iter_K] [dpo.samples_per_instruction=K] [KEY=VALUE ...]
                                                                  preference-tune (DPO, LoRA) on sampled, scored long outputs
       python -m selflengthen rl [prompts=FILE|RUN/iter_K] [adapter=RUN/iter_K|FOLDER] [rl.train.steps=N] [KEY=VALUE ...]
                                                                  GRPO (LoRA) rewarded for the asked length, ending, no repetition
       python -m selflengthen finalize RUN [step=collect|constrain|export|train|eval] [KEY=VALUE ...]
                                                                  collect, length-constrain and export a run's data; train the final model
       python -m selflengthen agentwrite input=FILE [adapter=RUN/iter_K] [agentwrite.mix.general=PATH] [KEY=VALUE ...]
                                                                  AgentWrite (plan, then write paragraph by paragraph)
                                                                  + a LongWriter-style training set
       python -m selflengthen inspect [RUN ...] [--iterations-dir DIR]   length (and eval) table + plot
       python -m selflengthen estimate [experiment=NAME] [estimate.tokens_per_s_per_gpu=N | estimate.from_run=RUN] [KEY=VALUE ...]
                                                                  expected tokens, GPU-hours and memory per GPU of a run
       python -m selflengthen run --help                          the config and its groups"""


def _debugging() -> bool:
    return os.environ.get("SELFLENGTHEN_DEBUG", "") not in ("", "0")


def _fail(err: BaseException) -> None:
    print(f"selflengthen: error: {err}", file=sys.stderr)
    sys.exit(2)


def _run_job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from selflengthen.commands.run import run_and_report

    hc = HydraConfig.get()
    if hc.mode.name == "MULTIRUN" and not any(o.startswith("run.name=") for o in hc.overrides.task):
        with open_dict(cfg):  # one sweep folder, named after the sweep, with one run folder per job
            cfg.tracking.group = cfg.tracking.group or sweep_name(cfg, hc)  # the trackers group the jobs
            cfg.paths.iterations_dir = str(Path(str(cfg.paths.iterations_dir)) / sweep_name(cfg, hc))
            cfg.run.name = _safe(",".join(sorted(_sweep_overrides(hc))) or str(hc.job.num))
    with user_errors(cfg.debug, "finished stages are kept"):
        text, png = run_and_report(cfg)
        print(text)
        if png:
            print(f"plot: {png}")


@contextmanager
def user_errors(debug: bool, kept: str):
    """A user error is one line and exit 2 (the traceback only with debug); Ctrl-C says
    what is kept and how to resume."""
    try:
        yield
    except UserError as err:
        if debug or _debugging():
            raise
        _fail(err)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (errors.Terminated)
        what, code = ("terminated (SIGTERM)", 143) if isinstance(err, Terminated) else ("interrupted", 130)
        print(f"selflengthen: {what}; {kept}, run the same command to resume", file=sys.stderr)
        sys.exit(code)
    except OSError as err:  # a full disk anywhere (artifacts.py names the folder for its own writes)
        if err.errno not in DISK_FULL or debug or _debugging():
            raise
        _fail(disk_error(err, Path(err.filename or "the output folder/?")))


def _safe(text: str) -> str:
    return text.replace("/", "-").replace("=", "-").replace(",", "_") or "job"


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
    if cfg.get("sweep_name"):
        return _safe(str(cfg.sweep_name))
    base = "sweep" if any(k.startswith("model") for k in _SWEPT) else f"{cfg.run.name}-sweep"
    return _safe(f"{base}-{'-'.join(_SWEPT) or 'jobs'}")


def _eval_job(cfg) -> None:
    from selflengthen.commands.eval import run_eval, summary_table

    with user_errors(cfg.debug, "finished items are kept"):
        for summary, out in run_eval(cfg):
            print(summary_table(summary))
            print(f"results: {out}")


def _finalize_job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from selflengthen.commands.finalize import report, run_finalize

    with user_errors(cfg.debug, "finished finalize steps are kept"):
        manifest, fp = run_finalize(cfg, list(HydraConfig.get().overrides.task))
        print(report(manifest, fp))


def run_argument(argv: list[str]) -> list[str]:
    """`finalize RUN ...`: RUN (a run name under paths.iterations_dir, or a run folder)
    becomes the overrides run.name= (and paths.iterations_dir= for a folder)."""
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise UserError("name the run to finalize: python -m selflengthen finalize RUN [KEY=VALUE ...] "
                        "(RUN: a run name under iterations/, or a run folder)")
    run, rest = argv[0], argv[1:]
    folder = Path(run).expanduser()
    if (folder / "config.yaml").is_file() and not any(a.startswith("paths.iterations_dir=") for a in rest):
        return [f"paths.iterations_dir={folder.resolve().parent}", f"run.name={folder.resolve().name}", *rest]
    return [f"run.name={run.rstrip('/')}", *rest]


def _dpo_job(cfg) -> None:
    from selflengthen.commands.dpo import report, run_dpo

    with user_errors(cfg.debug, "finished samples, pairs and training are kept"):
        result, paths = run_dpo(cfg)
        print(report(result, paths))


def _rl_job(cfg) -> None:
    from selflengthen.commands.rl import report, run_rl

    with user_errors(cfg.debug, "finished trainer checkpoints are kept"):
        print(report(run_rl(cfg)))


def _agentwrite_job(cfg) -> None:
    from selflengthen.commands.agentwrite import run_agentwrite, summary_text

    with user_errors(cfg.debug, "finished plans and paragraphs are kept"):
        metrics, out = run_agentwrite(cfg)
        print(summary_text(metrics))
        print(f"results: {out}")


# The key that moves each verb's output (Hydra's log folder is created under it first).
OUTPUT_KEYS = {"config": "paths.iterations_dir", "eval": "out_dir", "dpo": "out_dir", "agentwrite": "out_dir",
               "rl": "out_dir"}


def hydra_verb(argv: list[str], config_name: str, job) -> None:
    """Run `job` under Hydra with the config `conf/<config_name>.yaml` and the overrides."""
    import hydra

    try:
        conf = conf_dir()
    except UserError as err:
        _fail(err)
    if not any(a in ("-h", "--help", "--hydra-help") for a in argv):
        try:
            precheck(argv, config_name)
        except UserError as err:
            if _debugging():
                raise
            _fail(err)
    main = hydra.main(config_path=str(conf), config_name=config_name, version_base="1.3")(job)
    _SWEPT[:] = swept_keys(argv)
    sys.argv = [sys.argv[0]] + argv
    main()


def precheck(argv: list[str], config_name: str) -> None:
    """Compose the config once before Hydra runs the job, so that an unknown key or group
    option, or an output folder that cannot be created, is one line (Hydra itself prints
    a report of several lines, or a traceback when it cannot create its log folder)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
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
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
            multirun = any(a in ("-m", "--multirun") for a in argv)
            out = OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    except (HydraException, OmegaConfBaseException) as err:
        unknown = re.match(r"Could not override '([^']+)'", str(err))
        if unknown:
            raise UserError(unknown_key(unknown[1])) from err  # the schema's own line: `+KEY=VALUE` is refused too
        raise UserError(f"{_one_line(err)} (python -m selflengthen run --help shows every key and group)") from err
    finally:
        GlobalHydra.instance().clear()

    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    unset = [k for k in missing_values(cfg) if k not in swept]
    if unset:
        raise UserError(f"config: {', '.join(unset)} must be set (the chosen preset leaves "
                        f"{'it' if len(unset) == 1 else 'them'} as ???); add "
                        + " ".join(f"{k}=VALUE" for k in unset) + " to the command")
    problem = unwritable(Path(str(out))) if config_name in OUTPUT_KEYS else None
    if problem:
        key = OUTPUT_KEYS[config_name]
        raise UserError(f"cannot create the output folder {out}: {problem}; set {key}= to a folder you can write")


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


def inspect_cmd(argv: list[str]) -> None:
    from selflengthen.commands.inspect import inspect_runs

    parser = argparse.ArgumentParser(prog="python -m selflengthen inspect",
                                     description="Per-iteration length table and plot of a run.")
    parser.add_argument("runs", nargs="*", help="run names under the iterations folder, run folders, or a "
                        "sweep folder (its runs are overlaid); default: the most recent run")
    parser.add_argument("--iterations-dir", default="iterations", type=Path)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    with user_errors(args.debug, "nothing was changed"):
        text, png = inspect_runs(args.runs, args.iterations_dir)
    print(text)
    if png:
        print(f"plot: {png}")


def estimate_cmd(argv: list[str]) -> None:
    """The run's config composed (as `run` would) and costed; no Hydra job, nothing written."""
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m selflengthen estimate [KEY=VALUE ...]\n\nthe estimate.* keys (conf/estimate.yaml) "
              "and every run override; e.g. experiment=paper-qwen2-7b estimate.tokens_per_s_per_gpu=3000")
        return
    from selflengthen.commands.estimate import run_estimate

    debug = "--debug" in argv
    overrides = [a for a in argv if a != "--debug"]
    try:
        precheck(overrides, "estimate")  # a bad override or key: one line
    except UserError as err:
        if debug or _debugging():
            raise
        _fail(err)
    with user_errors(debug, "nothing was written"):
        _, text = run_estimate(overrides)
    print(text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sigterm_stops_like_ctrl_c()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        hydra_verb(rest, "config", _run_job)
    elif command == "eval":
        hydra_verb(rest, "eval", _eval_job)
    elif command == "finalize":
        try:
            rest = run_argument(rest)
        except UserError as err:
            _fail(err)
        hydra_verb(rest, "finalize", _finalize_job)
    elif command == "dpo":
        hydra_verb(rest, "dpo", _dpo_job)
    elif command == "rl":
        hydra_verb(rest, "rl", _rl_job)
    elif command == "agentwrite":
        hydra_verb(rest, "agentwrite", _agentwrite_job)
    elif command == "inspect":
        inspect_cmd(rest)
    elif command == "estimate":
        estimate_cmd(rest)
    else:
        _fail(UserError(f"unknown command {command!r}; use one of {', '.join(VERBS)} (python -m selflengthen --help)"))
