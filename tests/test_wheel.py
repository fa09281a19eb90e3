"""The wheel runs anywhere: built from a copy of the source tree, installed into a fresh
virtual environment (which reaches the project environment's packages, so nothing is
downloaded), it answers `selflengthen --help` and composes the full config from its own
`selflengthen.conf` in an empty folder (the estimate verb: the whole run config, costed,
nothing written; `run --help`: Hydra's entry lists the config groups). Also: every package of the source tree is listed for the wheel."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO, run_watched


def test_every_package_is_in_the_wheel_list():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "selflengthen").rglob("__init__.py")}
    assert on_disk | {"selflengthen.conf"} == set(tool["packages"])
    assert tool["package-dir"]["selflengthen.conf"] == "conf" and (REPO / "conf" / "__init__.py").is_file()


@pytest.mark.slow(minutes=0.2)  # about 6 s: a wheel build, a venv, three commands
def test_the_installed_wheel_finds_its_configs_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"  # the build writes build/ and *.egg-info beside its sources: build from a copy
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("selflengthen", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip"]

    def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
        proc = run_watched(args, cwd=cwd, env=env)  # stopped by the progress watchdog, not by a time limit
        assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], cwd=src)
    wheel = next((tmp_path / "dist").glob("selflengthen-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp_path).stdout.strip())
    # the project environment's packages (torch, hydra, ...) after the new environment's own
    (site / "project-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)], cwd=tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    exe = venv / "bin" / "selflengthen"
    assert "python -m selflengthen run" in run([str(exe), "--help"], cwd=empty).stdout
    where = run([str(python), "-c", "import selflengthen, selflengthen.config.files as f; "
                 "print(selflengthen.__file__); print(f.conf_dir())"], cwd=empty).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == str(site / "selflengthen" / "conf"), where
    estimate = run([str(exe), "estimate"], cwd=empty)  # composes conf/estimate.yaml and the run config
    groups = run([str(exe), "run", "--help"], cwd=empty).stdout  # Hydra's own entry, on the same folder
    assert "== Configuration groups ==" in groups and "model: " in groups, groups[-2000:]
    assert "assumptions (estimate.*)" in estimate.stdout, estimate.stdout
    assert list(empty.iterdir()) == []  # nothing written
