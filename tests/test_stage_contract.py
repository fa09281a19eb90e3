"""The stage contract (pipeline/stage.py over store/steps.py): a stage whose manifest records
the settings asked now (its slice and what reaches it through Inputs) is skipped; one made
with other settings is refused in one line naming the changed keys, or redone with redo=; a
manifest written before the settings were recorded (a run from an earlier version) resumes
as done when its slice hash matches or it has none; the manifest
is written after the data and the checkpoints go once it is down."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from selflengthen.core.errors import UserError
from selflengthen.pipeline import stage
from selflengthen.store import artifacts, steps
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
    assert manifest["made_with"]["settings"] == steps.plain(settings.loop.curate) and manifest["counts"] == {"n": 1}
    assert manifest["made_with"]["inputs"]["seed"] == settings.seed
    assert not it.checkpoint("count").exists() and manifest["outputs"] == ["count.jsonl"]
    assert asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it))) is None  # done: skipped
    other = typed(compose_config("loop.curate.line_keep_prob=0.5"))
    with pytest.raises(UserError) as err:
        asyncio.run(stage.run_stage(counting, other, stage_inputs(other, it)))
    message = str(err.value)
    assert message.startswith(f"run's count step in {it.root} was made with other settings "
                              "(changed: settings.line_keep_prob)") and "redo=count" in message
    assert "run.name=NEW" in message and "\n" not in message and len(calls) == 1
    older = {k: v for k, v in manifest.items() if k not in ("made_with", "settings_hash")}
    artifacts.write_json(it.stage_manifest("count"), older)
    assert asyncio.run(stage.run_stage(counting, other, stage_inputs(other, it))) is None  # an older run's manifest
    artifacts.write_json(it.stage_manifest("count"), {**older, "settings_hash": stage.settings_hash(other.loop.curate)})
    assert asyncio.run(stage.run_stage(counting, other, stage_inputs(other, it))) is None  # its slice hash matches
    with pytest.raises(UserError, match="recorded only a digest"):
        asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it)))
    assert len(calls) == 1


def test_what_reaches_a_stage_beside_its_slice_is_checked_and_redo_redoes_it(tmp_path, compose_config):
    it = artifacts.RunPaths(tmp_path).iteration(2)
    calls: list = []
    counting = counting_stage(calls)
    settings = typed(compose_config())
    asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it)))
    other_seed = typed(compose_config("seed=7"))
    with pytest.raises(UserError, match=r"\(changed: inputs.seed\)"):
        asyncio.run(stage.run_stage(counting, other_seed, stage_inputs(other_seed, it)))
    adapters = {"generator": str(tmp_path / "iter_01" / "adapters" / "generator")}
    with pytest.raises(UserError, match=r"\(changed: inputs.adapters.generator\)"):
        asyncio.run(stage.run_stage(counting, settings, stage_inputs(settings, it, adapters=adapters)))
    redo = replace(stage_inputs(other_seed, it), owner=stage.Owner(redo=frozenset({"count"})))
    assert asyncio.run(stage.run_stage(counting, other_seed, redo)) == {"n": 2}  # redone
    assert artifacts.read_json(it.stage_manifest("count"))["made_with"]["inputs"]["seed"] == 7
    assert asyncio.run(stage.run_stage(counting, other_seed, redo)) is None  # made with these now: kept
    assert len(calls) == 2
