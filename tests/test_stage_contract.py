"""The stage contract (pipeline/stage.py): a stage whose manifest records the same settings
hash is skipped; one made with other settings is refused in one line; a manifest written
before the hash was recorded (a run from an earlier version) resumes as done; the manifest
is written after the data and the checkpoints go once it is down."""
from __future__ import annotations

import asyncio

import pytest

from selflengthen.core.errors import UserError
from selflengthen.pipeline import stage
from selflengthen.store import artifacts
from tests.fakes import stage_inputs, typed


def counting_stage(calls: list):
    def body(chosen, inputs):
        calls.append(chosen)
        inputs.paths.checkpoint("count").parent.mkdir(parents=True, exist_ok=True)
        inputs.paths.checkpoint("count").write_text("{}\n")
        artifacts.write_jsonl(inputs.paths.root / "count.jsonl", [{"n": len(calls)}])
        return stage.Output(counts={"n": len(calls)}, outputs=[inputs.paths.root / "count.jsonl"],
                            checkpoints=("count",))

    return stage.Stage("count", unit="row", settings=lambda s: s.loop.curate, body=body)


def test_skip_when_done_refuse_other_settings_and_resume_an_older_manifest(tmp_path, compose_config):
    it = artifacts.RunPaths(tmp_path).iteration(1)
    calls: list = []
    counting = counting_stage(calls)
    settings = typed(compose_config())
    assert asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it))) == {"n": 1}
    manifest = artifacts.read_json(it.stage_manifest("count"))
    assert manifest["settings_hash"] == stage.settings_hash(settings.loop.curate) and manifest["counts"] == {"n": 1}
    assert not it.checkpoint("count").exists() and manifest["outputs"] == ["count.jsonl"]
    assert asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it))) is None  # done: skipped
    other = typed(compose_config("loop.curate.line_keep_prob=0.5"))
    with pytest.raises(UserError) as err:
        asyncio.run(stage.run_stage(counting, other, stage_inputs(other, it)))
    assert "iteration 1's count stage" in str(err.value) and "other settings" in str(err.value)
    assert "\n" not in str(err.value) and len(calls) == 1
    artifacts.write_json(it.stage_manifest("count"), {k: v for k, v in manifest.items() if k != "settings_hash"})
    assert asyncio.run(stage.run_stage(counting, other, stage_inputs(other, it))) is None  # an older run's manifest
    assert len(calls) == 1
