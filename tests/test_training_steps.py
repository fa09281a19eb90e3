"""train.max_steps: a cap on each adapter's optimizer steps an iteration (the epochs decide
below it), counted as the trainer counts them; then one real TRL training of the tiny
model with the cap binding and not."""
from __future__ import annotations

import pytest

from selflengthen.pipeline.stages import train
from selflengthen.store import artifacts
from selflengthen.training.sft import step_cap, train_adapter
from tests.fakes import typed


def _tcfg(compose_config, *overrides: str) -> dict:
    return train.role_configs(train.settings_of(typed(compose_config(*overrides))))["generator"]


def test_the_cap_binds_only_where_the_epochs_take_more_steps(compose_config):
    tcfg = _tcfg(compose_config)
    assert tcfg["max_steps"] == 64 and tcfg["epochs"] == 2  # the tiny preset's generator
    assert step_cap(59, tcfg) == 64  # 118 steps capped
    assert step_cap(31, tcfg) == -1  # 62 steps: the epochs decide, and no small set is cycled to 64
    assert step_cap(32, tcfg) == -1  # exactly 64
    assert step_cap(59, {**tcfg, "gradient_accumulation_steps": 4}) == -1  # 2 x 14 = 28 steps
    assert step_cap(300, {**tcfg, "per_device_batch_size": 2}, world=2) == 64  # 2 x 75 = 150
    assert step_cap(59, {**tcfg, "max_steps": None}) == -1
    assert _tcfg(compose_config, "model=qwen2.5-7b-instruct")["max_steps"] is None  # the paper's: epochs only


@pytest.mark.slow
def test_a_capped_training_stops_at_the_cap(tiny_model, tmp_path, compose_config):
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"Write about topic {i}."},
                                         {"role": "assistant", "content": f"Topic {i} is a module. " * 20}]}
            for i in range(6)]
    data = tmp_path / "sft.jsonl"
    artifacts.write_jsonl(data, rows)
    tcfg = _tcfg(compose_config, "train.max_length=256", "train.save_every_steps=0")
    capped = train_adapter(str(tiny_model), str(data), str(tmp_path / "capped"), None, {**tcfg, "max_steps": 5}, 0)
    free = train_adapter(str(tiny_model), str(data), str(tmp_path / "free"), None, {**tcfg, "max_steps": 64}, 0)
    assert capped["steps"] == 5 and capped["max_steps"] == 5
    assert free["steps"] == 12  # 6 rows x 2 epochs: under the cap, never cycled up to it
    assert (tmp_path / "capped" / "adapter_config.json").exists()
