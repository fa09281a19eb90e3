"""`python -m selflengthen rl` through the real command line: a prompt without a length is
refused before any work; on the tiny model, a run killed after its first complete trainer
checkpoint resumes from it and finishes the same schedule, with its manifest written last."""
import json
import sys

import pytest

from selflengthen.store import artifacts
from tests.conftest import REPO, kill_session_when, run_cli


def write_prompts(path, prompts) -> None:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")


def test_a_prompt_without_a_length_is_refused_before_any_work(tmp_path):
    src = tmp_path / "prompts.jsonl"
    write_prompts(src, ["Write about the json module in about 100 words.", "Write a poem about the moon."])
    proc = run_cli("rl", f"prompts={src}", f"out_dir={tmp_path / 'rl'}", cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("selflengthen: error:")]
    assert len(lines) == 1 and "row 2" in lines[0] and "poem about the moon" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not any((tmp_path / "rl").glob("*/prompts.jsonl"))  # nothing was started


def test_a_quality_reward_without_a_model_is_refused_in_one_line(tmp_path):
    proc = run_cli("rl", "rl.rewards.use=[length,quality]", f"out_dir={tmp_path / 'rl'}", cwd=REPO)
    assert proc.returncode == 2 and "rl.rewards.quality_model" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow(minutes=4)
def test_rl_killed_after_a_checkpoint_resumes_and_finishes_the_schedule(tmp_path, model_cache, tiny_model):
    out = tmp_path / "rl"
    common = ["rl", f"out_dir={out}", "name=tiny", f"paths.cache_dir={model_cache}", "limit=8",
              "rl.train.steps=4", "rl.train.save_every_steps=1", "rl.train.num_generations=4",
              "rl.train.prompts_per_step=1", "rl.train.max_completion_length=48", "ray.num_cpus=2"]
    work = out / "tiny" / "adapter.trainer"
    kill_session_when([sys.executable, "-m", "selflengthen", *common],
                      lambda: any(work.glob("checkpoint-*/selflengthen_complete.json")),
                      tmp_path / "killed.log", "the rl run", watch=(out,))
    assert not (out / "tiny" / "manifest.json").exists()

    proc = run_cli(*common, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = artifacts.read_json(out / "tiny" / "manifest.json")
    train = manifest["train"]
    assert train["steps"] == 4 and train["resumed_from_step"] >= 1
    assert train["rewards"] == ["length", "termination", "repetition"]
    assert manifest["generation"]["path"] == "trl-transformers" and manifest["generation"]["generated_tokens"] > 0
    steps = artifacts.read_jsonl(out / "tiny" / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # the killed run's steps and the resumed ones, once each
    assert all("rewards/length/mean" in s and "words/mean" in s and "termination/rate" in s for s in steps)
    assert (out / "tiny" / "adapter" / "adapter_config.json").exists() and not work.exists()
    assert artifacts.read_json(out / "tiny" / "status.json")["step"] == 4
    rows = artifacts.read_jsonl(out / "tiny" / "prompts.jsonl")
    assert len(rows) == 8 and all(0 < r["lower"] < r["upper"] for r in rows)

    again = run_cli(*common, cwd=REPO)  # finished: nothing to do
    assert again.returncode == 0 and "nothing to do" in again.stderr + again.stdout

    # the step contract (store/steps.py): another setting is refused naming it, before any work
    changed = run_cli(*common, "rl.train.temperature=0.7", cwd=REPO)
    assert changed.returncode == 2, changed.stderr[-2000:]
    line = changed.stderr.strip().splitlines()[-1]
    assert "rl's train step" in line and "train.temperature" in line and "redo=train" in line, line
    assert artifacts.read_json(out / "tiny" / "manifest.json") == manifest  # what was made is kept


@pytest.mark.slow(minutes=2)
def test_rl_with_multiplied_rewards_trains_on_their_product(tmp_path, model_cache, tiny_model):
    out = tmp_path / "rl"
    proc = run_cli("rl", f"out_dir={out}", "name=product", f"paths.cache_dir={model_cache}", "limit=4",
                   "rl.train.steps=2", "rl.train.save_every_steps=0", "rl.train.num_generations=4",
                   "rl.train.prompts_per_step=1", "rl.train.max_completion_length=32", "ray.num_cpus=2",
                   "rl.rewards.aggregation=multiply", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = artifacts.read_json(out / "product" / "manifest.json")
    assert manifest["train"]["multi_objective_aggregation"] == "multiply"
    steps = artifacts.read_jsonl(out / "product" / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:  # the product is the reward; each component is logged beside it
        assert 0.0 <= s["rewards/product/mean"] <= 1.0
        assert all(f"rewards/{n}/mean" in s for n in ("length", "termination", "repetition"))
    assert "product" in manifest["last_step"]
