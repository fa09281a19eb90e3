"""loop.guard: an iteration whose kept data is more degenerate than the previous iteration's
is named in one line (which signal, from what to what), and with loop.guard.stop the run
stops before training on it; off by default, and not part of the method."""
from __future__ import annotations

import asyncio
import logging

import pytest

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.pipeline import stage
from selflengthen.pipeline.stages import guard
from selflengthen.store import artifacts
from tests.fakes import stage_inputs, typed

VARIED = [" ".join(f"{topic} fact {i} differs from fact {i + 1} in its own way." for i in range(12))
          for topic in ("Rivers", "Glaciers", "Deserts", "Forests")]
REPEATED = ["The river flows to the sea. " * 24 for _ in range(4)]


def iteration(root, k: int, texts: list[str]) -> artifacts.IterationPaths:
    it = artifacts.RunPaths(root).iteration(k)
    artifacts.write_jsonl(it.extended, [{"id": f"e{k}-{i}", "language": "en", "response": t}
                                        for i, t in enumerate(texts)])
    return it


def guarded(compose_config, it, *overrides):
    settings = typed(compose_config(*overrides))
    return asyncio.run(stage.run_stage(guard.STAGE, settings, stage_inputs(settings, it)))


def test_degenerate_data_is_named_and_stops_training_when_asked(tmp_path, compose_config):
    iteration(tmp_path, 1, VARIED)
    it = iteration(tmp_path, 2, REPEATED)
    with pytest.raises(UserError) as err:
        guarded(compose_config, it, "loop.guard.check=true", "loop.guard.stop=true")
    line = str(err.value)
    assert line.startswith("iteration 2's kept data is more degenerate than iteration 1's: ") and "\n" not in line
    assert "repeated_ngram_rate 0.000 -> " in line and "distinct_3 " in line and "loop.guard.stop=false" in line
    assert not it.stage_done("guard")  # nothing recorded: the rerun checks again


def test_flagged_without_stop_the_run_goes_on_and_the_manifest_says_what_moved(tmp_path, compose_config, caplog):
    iteration(tmp_path, 1, VARIED)
    it = iteration(tmp_path, 2, REPEATED)
    with caplog.at_level(logging.WARNING, logger="selflengthen"):
        counts = guarded(compose_config, it, "loop.guard.check=true")
    moved = {m["signal"]: m for m in counts["degenerate"]}
    assert moved["repeated_ngram_rate"]["previous"] == 0 and moved["repeated_ngram_rate"]["current"] > 0.5
    assert moved["distinct_2"]["current"] < moved["distinct_2"]["previous"]
    assert "more degenerate" in caplog.text
    assert artifacts.read_json(it.stage_manifest("guard"))["counts"] == counts


def test_the_same_data_or_a_guard_left_off_flags_nothing(tmp_path, compose_config):
    iteration(tmp_path, 1, VARIED)
    it = iteration(tmp_path, 2, VARIED)
    assert guarded(compose_config, it, "loop.guard.check=true")["degenerate"] == []
    other = iteration(tmp_path / "off", 1, VARIED)
    worse = iteration(tmp_path / "off", 2, REPEATED)
    assert other.k == 1 and guarded(compose_config, worse)["check"] is False  # the default: off


def test_the_guard_may_change_when_a_run_resumes(compose_config):
    before = typed(compose_config()).method
    after = typed(compose_config("loop.guard.check=true", "loop.guard.stop=true")).method
    assert before.changes(after) == []
    assert before.changes(typed(compose_config("loop.curate.line_keep_prob=0.5")).method) == ["loop.curate.line_keep_prob"]
    assert schema.Guard().check is False
