"""Every script under scripts/ still runs against the code it drives: each benchmark in its
`--smoke` mode (a handful of short requests on the tiny model, through the same composed and
typed settings a verb builds: preflight.composed), every other script's `--help`, the shell
scripts' syntax; and none composes the config files by hand (OmegaConf.load of conf/, or
Hydra's compose API outside config/files.py), so a setting the verbs gain reaches the
scripts too. Speed is the benchmarks' business; here only that they run to their table."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_watched

SCRIPTS = REPO / "scripts"
# each benchmark's smoke mode: the rows its table must print (its own check that it measured)
SMOKES = {
    "bench_drop_short.py": (["--smoke"], ["speed-up", "200"]),
    "bench_throughput.py": (["--smoke"], ["(b)  extend stage", "(d)  chains"]),
    "bench_dtype.py": (["--smoke"], ["bf16/fp32", "\ntiny "]),
    "bench_lora_serving.py": (["--smoke"], ["merged/adapters", "\ntiny "]),
    "bench_merged_swap.py": (["--smoke"], ["restart/reload", "\ntiny "]),
    "bench_agentwrite.py": (["--smoke"], ["all in flight", "one at a time", "plan vs actual"]),
    "bench_train_workers.py": (["--smoke"], ["wall vs first"]),
    "bench_rl_generation.py": (["--smoke"], ["tokens/s per step", "\ntiny ", " trl ", " vllm "]),
}
# the serving benchmarks share bench_dtype's helpers: their smoke runs go in one process (one
# import of vLLM, one Ray start; each still starts its own engines)
SERVING = ("bench_dtype.py", "bench_lora_serving.py", "bench_merged_swap.py")
IN_ONE = ("import runpy, sys\n"
          "for path in sys.argv[1:]:\n"
          "    print('=== ' + path, flush=True)\n"
          "    sys.argv = [path, '--smoke']\n"
          "    runpy.run_path(path, run_name='__main__')\n")
# the minutes each smoke takes on a 2-core machine (its engine starts, mostly), with room for a
# slower CPU; the suite's scheduler reads them (tests/conftest.py)
MINUTES = {"bench_drop_short.py": 0.05, "bench_throughput.py": 1.5, "serving": 3, "bench_agentwrite.py": 1,
           "bench_train_workers.py": 1, "bench_rl_generation.py": 1.5}
# the scripts that are not benchmarks: each answers --help here (a new one is named here too)
OTHER_SCRIPTS = ("build_tiny_model.py", "compare_recipes.py", "demo_builds.py", "heldout_steps.py",
                 "heldout_transformers.py", "measure_train_memory.py", "memory_table.py", "project_scale.py",
                 "rl_tiny_prompts.py", "rl_writing_prompts.py", "smollm2_lengthening.py")
HAND_COMPOSED = re.compile(r"OmegaConf\.load\([^)]*conf\b|initialize_config_dir|hydra import compose")


def python_scripts() -> list[str]:
    return sorted(p.name for p in SCRIPTS.glob("*.py"))


def test_every_benchmark_has_a_smoke_run_and_every_script_is_covered():
    benchmarks = {name for name in python_scripts() if name.startswith("bench_")}
    assert benchmarks == set(SMOKES), "a benchmark without a smoke run here (or one that is gone): add it to SMOKES"
    assert set(python_scripts()) - benchmarks == set(OTHER_SCRIPTS), "name a new script in OTHER_SCRIPTS"
    assert set(MINUTES) == set(SMOKES) - set(SERVING) | {"serving"} and set(SERVING) <= set(SMOKES)


@pytest.mark.parametrize("name", python_scripts())
def test_no_script_composes_the_config_files_by_hand(name):
    text = (SCRIPTS / name).read_text(encoding="utf-8")
    assert not HAND_COMPOSED.search(text), \
        f"{name} composes conf/ by hand; use selflengthen.preflight.composed(verb, overrides), as the verbs compose"


@pytest.mark.parametrize("name", python_scripts())
def test_every_script_answers_help_and_each_benchmark_offers_a_smoke_mode(name):
    """Imports and the command line, without an engine: the benchmarks' smoke runs are slow."""
    proc = run_watched([sys.executable, str(SCRIPTS / name), "--help"], cwd=REPO)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-3000:]
    assert name not in SMOKES or "--smoke" in proc.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_the_shell_scripts_parse(name):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_bad_override_is_one_line_and_exit_2():
    proc = run_watched([sys.executable, str(SCRIPTS / "bench_agentwrite.py"), "--smoke", "engine.replicas=0"],
                       cwd=REPO)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("selflengthen: error: config: engine.replicas"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow(minutes=MINUTES[n]) if MINUTES[n] > 0.1 else ())
                                  for n in SMOKES if n not in SERVING])
def test_each_benchmark_runs_its_smoke_mode(name, tiny_model):
    args, expected = SMOKES[name]
    proc = run_watched([sys.executable, str(SCRIPTS / name), *args], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    for text in expected:
        assert text in proc.stdout, f"{name}: no {text!r} in its table:\n{proc.stdout[-3000:]}"


@pytest.mark.slow(minutes=MINUTES["serving"])
def test_the_serving_benchmarks_run_their_smoke_modes(tiny_model):
    proc = run_watched([sys.executable, "-c", IN_ONE, *(str(SCRIPTS / n) for n in SERVING)], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    tables = dict(part.split("\n", 1) for part in proc.stdout.split("=== ")[1:])
    for name in SERVING:
        table = tables[str(SCRIPTS / name)]
        for text in SMOKES[name][1]:
            assert text in table, f"{name}: no {text!r} in its table:\n{table[-3000:]}"
