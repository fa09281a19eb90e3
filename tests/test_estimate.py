"""`python -m selflengthen estimate` through the real command line: the paper presets'
table carries the numbers the pure functions give for that config, a previous run's
measured tokens/s is used, and bad input is one line with exit 2. Writes only under tmp."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from selflengthen import preflight
from selflengthen.commands import estimate as command
from selflengthen.config import schema
from selflengthen.estimate import memory, settings, tokens
from selflengthen.pipeline import stages as loop_stages
from tests.conftest import REPO, run_cli
from tests.test_estimate_units import fake_run


def expected(*overrides: str) -> tuple[dict, list[tokens.Iteration]]:
    c = OmegaConf.to_container(command.compose(list(overrides)), resolve=True)
    typed = preflight.settings(command.compose(list(overrides)), "estimate", settings.CONFIG_CHECK, here=False)
    return c, tokens.iterations(settings.shape(typed), settings.assumptions(typed.estimate),
                                loop_stages.engine_names())


@pytest.mark.parametrize("preset", ["paper-qwen2-7b", "paper-llama3.1-8b"])
def test_paper_preset_estimate(preset, tmp_path):
    out = tmp_path / "estimate.json"
    proc = run_cli("estimate", f"experiment={preset}", "estimate.tokens_per_s_per_gpu=3000", f"estimate.out={out}",
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    c, its = expected(f"experiment={preset}", "estimate.tokens_per_s_per_gpu=3000")
    # the paper's scale: 5,000 instructions per language, 3 iterations, 4 epochs at 16k tokens
    assert c["iterations"] == 3 and c["loop"]["augment"]["new_per_language"] == 5000
    assert c["train"]["max_length"] == 16384 and c["train"]["epochs"] == 4 and c["train"]["learning_rate"] == 1e-4
    assert "iter  stage" in text and "5,000 new instructions" in text and "3 iterations" in text
    for it in its:  # every stage row shows the pure functions' numbers
        for name, st in it.stages.items():
            row = f"{it.k:>4}  {name:9} {command.human(st.requests):>9} {command.human(st.prompt_tokens):>11} " \
                  f"{command.human(st.generated_tokens):>14} {command.hours(st.generated_tokens / 3000 / 3600):>10}"
            assert row in text, (row, text)
        assert command.human(it.training_tokens(4)) in text
    # the paper's lengths: ~1,000 words before training, ~8,000 after 3 iterations
    assert its[0].words["en"]["initial"] == pytest.approx(1000)
    assert its[-1].words["en"]["extended"] == pytest.approx(8000, rel=0.01)
    assert "en 4,002 -> 8,005 words" in text
    written = json.loads(out.read_text())
    assert written["total"]["generated_tokens"] == pytest.approx(
        sum(st.generated_tokens for it in its for st in it.stages.values()))
    assert written["total"]["training_tokens"] == pytest.approx(sum(it.training_tokens(4) for it in its))
    train_mem = memory.training_gib(command.model_arch(schema.Model.model_validate(c["model"])), seq=16384, rank=16, workers=4, strategy="deepspeed",
                                    cpu_offload=True, gradient_checkpointing=True, overhead_gib=2.0)
    assert written["memory"]["training"]["total"] == pytest.approx(train_mem["total"])
    assert f"= {train_mem['total']:.1f} GiB: fits in 80 GiB" in text
    assert f"written: {out}" in text


def test_default_config_estimate_needs_no_throughput(tmp_path):
    proc = run_cli("estimate", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generation GPU-hours: give estimate.tokens_per_s_per_gpu" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_estimate_from_a_previous_run(tmp_path):
    run = fake_run(tmp_path / "iterations" / "measured")
    out = tmp_path / "e.json"
    proc = run_cli("estimate", "experiment=paper-llama3.1-8b", f"estimate.from_run={run.root}", f"estimate.out={out}",
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = json.loads(out.read_text())["rates"]
    assert rates["source"] == "from_run"
    assert rates["per_stage"] == {"augment": 2 * 400 / (2 * 2.0 * 2), "generate": 2 * 2000 / (2 * 4.0 * 2),
                                  "extend": 2 * 6000 / (2 * 10.0 * 2)}
    assert f"measured by {run.root}" in proc.stdout and "extend 300" in proc.stdout
    assert "note: measured with model embedded:tiny" in proc.stdout
    # a run name under paths.iterations_dir works too
    proc = run_cli("estimate", "estimate.from_run=measured", f"paths.iterations_dir={tmp_path / 'iterations'}",
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "measured by" in proc.stdout


@pytest.mark.parametrize("what, message", [("missing", "no such run folder"), ("empty", "no measured stage")])
def test_bad_from_run_is_one_line(what, message, tmp_path):
    (tmp_path / "empty" / "iter_1" / "manifests").mkdir(parents=True)
    proc = run_cli("estimate", f"estimate.from_run={tmp_path / what}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bad_estimate_key_is_one_line(tmp_path):
    proc = run_cli("estimate", "estimate.mfu=3", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "estimate.mfu=3 must be <= 1" in proc.stderr
    proc = run_cli("estimate", "experiment=paper-gpt", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "paper-qwen2-7b" in proc.stderr and proc.stderr.count("\n") == 1


def test_default_run_config_is_unchanged_by_the_experiment_group():
    c = OmegaConf.to_container(command.compose([]), resolve=True)
    assert c["iterations"] == 4 and c["model"]["name"] == "tiny" and "experiment" not in c
    assert (REPO / "conf" / "experiment" / "paper-qwen2-7b.yaml").is_file()


@pytest.mark.parametrize("preset", ["paper-qwen2-7b", "paper-llama3.1-8b"])
@pytest.mark.usefixtures("hub_on_loopback")  # the presets name uncached hub ids
def test_paper_presets_validate_as_run_configs(preset):
    """The same composition `run` gets; deepspeed (the paper's ZeRO-3) is the one package a
    GPU cluster must add, and the check says so up front."""
    import importlib.util

    cfg = command.compose([f"experiment={preset}"])
    found = preflight.problems(cfg, verb="estimate")
    if importlib.util.find_spec("deepspeed") is None:
        assert len(found) == 1 and "pip install deepspeed" in found[0], found
    else:
        assert found == []
    assert cfg.train.strategy == "deepspeed" and cfg.train.cpu_offload is True and cfg.iterations == 3


def test_an_unknown_model_still_gets_its_tokens():
    c = preflight.settings(command.compose(["model.path=someone/unknown-model", "estimate.tokens_per_s_per_gpu=100"]),
                           "estimate", settings.CONFIG_CHECK, here=False)  # the model is not looked for
    result = command.compute(c)
    assert result["memory"] is None and result["total"]["train_gpu_hours"] is None
    assert result["total"]["generation_gpu_hours"] > 0
    text = command.render(result)
    assert "the model's shape is unknown" in text and "total: " in text
