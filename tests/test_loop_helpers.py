"""Loop helpers that need no model: adapter carry-over and the instruction pool."""
import pytest

from selflengthen.core.errors import UserError
from selflengthen.pipeline.stages import train as train_stage
from selflengthen.store import artifacts, runs


def test_adapter_is_carried_over_when_a_role_has_no_data(tmp_path):
    paths = artifacts.RunPaths(tmp_path)
    previous = paths.iteration(1).adapter("generator")
    previous.mkdir(parents=True)
    (previous / "adapter_config.json").write_text("{}")
    it = paths.iteration(2)
    info = train_stage.carry_adapter_over(it, "generator", str(previous))
    assert info["examples"] == 0 and "carried over" in info["skipped"]
    assert (it.adapter("generator") / "adapter_config.json").read_text() == "{}"
    assert artifacts.read_json(it.stage_manifest("train_generator"))["init_adapter"] == str(previous)


def test_no_data_in_the_first_iteration_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no extender training data"):
        train_stage.carry_adapter_over(artifacts.RunPaths(tmp_path).iteration(1), "extender", None)


def test_pool_grows_with_earlier_iterations(tmp_path):
    paths = artifacts.RunPaths(tmp_path)
    artifacts.write_jsonl(paths.iteration(1).instructions, [{"language": "en", "instruction": "New one."}])
    pool = runs.instruction_pool({"en": ["Seed a.", "Seed b."]}, paths, upto=2)
    assert pool == {"en": ["Seed a.", "Seed b.", "New one."]}
    assert runs.instruction_pool({"en": ["Seed a.", "Seed b."]}, paths, upto=1) == {"en": ["Seed a.", "Seed b."]}
