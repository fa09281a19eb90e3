"""Command line: `python -m selflengthen run [hydra overrides]` and
`python -m selflengthen inspect [RUN]`. User errors print one line (the problem and
its fix) and exit 2; `debug=true` (run) or `--debug` / SELFLENGTHEN_DEBUG=1 shows the
traceback."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from selflengthen.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
USAGE = """usage: python -m selflengthen run [KEY=VALUE ...] [-m]   run the loop (Hydra overrides)
       python -m selflengthen inspect [RUN] [--iterations-dir DIR]   length table + plot
       python -m selflengthen run --help                          the config and its groups"""


def _debugging() -> bool:
    return os.environ.get("SELFLENGTHEN_DEBUG", "") not in ("", "0")


def _fail(err: BaseException) -> None:
    print(f"selflengthen: error: {err}", file=sys.stderr)
    sys.exit(2)


def _run_job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from selflengthen import loop
    from selflengthen.inspect_run import inspect

    hc = HydraConfig.get()
    if hc.mode.name == "MULTIRUN" and not any(o.startswith("run.name=") for o in hc.overrides.task):
        with open_dict(cfg):  # one run folder per sweep job
            cfg.run.name = f"{cfg.run.name}_{hc.job.override_dirname}".replace("/", "-").replace("=", "-")
    try:
        paths = loop.run(cfg)
        text, png = inspect(str(paths.root), Path(str(cfg.paths.iterations_dir)))
        print(text)
        if png:
            print(f"plot: {png}")
    except UserError as err:
        if cfg.debug or _debugging():
            raise
        _fail(err)
    except KeyboardInterrupt:
        print("selflengthen: interrupted; finished stages are kept, run the same command to resume", file=sys.stderr)
        sys.exit(130)


def run(argv: list[str]) -> None:
    import hydra

    if not CONF_DIR.is_dir():
        _fail(UserError(f"config folder {CONF_DIR} is missing; run from a checkout (pip install -e .)"))
    main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_run_job)
    sys.argv = [sys.argv[0]] + argv
    main()


def inspect_cmd(argv: list[str]) -> None:
    from selflengthen.inspect_run import inspect

    parser = argparse.ArgumentParser(prog="python -m selflengthen inspect",
                                     description="Per-iteration length table and plot of a run.")
    parser.add_argument("run", nargs="?", help="run name under the iterations folder, or a run folder "
                        "(default: the most recent run)")
    parser.add_argument("--iterations-dir", default="iterations", type=Path)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        text, png = inspect(args.run, args.iterations_dir)
    except UserError as err:
        if args.debug or _debugging():
            raise
        _fail(err)
    print(text)
    if png:
        print(f"plot: {png}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        run(rest)
    elif command == "inspect":
        inspect_cmd(rest)
    else:
        _fail(UserError(f"unknown command {command!r}; use `run` or `inspect` (python -m selflengthen --help)"))
