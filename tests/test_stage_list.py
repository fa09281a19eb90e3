"""The loop's one stage list (pipeline/stages/__init__.py's STAGES): each stage describes
itself (engine or not, what it writes, its unit); the loop opens the engine for each run of
consecutive engine stages; and a made-up stage added by one line (here: a stage that
generates and then trains, after train) runs in the loop on an engine of its own, writes
its manifest under the stage contract, and appears in the iteration's metrics, the stages
the trackers log, and `estimate` (its rows and a measured run's throughput). The stages'
bodies are stand-ins here (their own tests run them; test_end_to_end.py runs the list on
the real stack)."""
from __future__ import annotations

import dataclasses
import time
from contextlib import asynccontextmanager

import pytest

from selflengthen.commands import estimate as estimate_command
from selflengthen.estimate import measured
from selflengthen.pipeline import loop, metrics, observe, stages
from selflengthen.pipeline.stage import Output, Stage
from selflengthen.store import artifacts
from selflengthen.tracking import Tracker
from tests.fakes import typed


def test_each_stage_describes_itself_and_the_engine_runs_follow_the_list():
    assert stages.names() == ["augment", "generate", "extend", "curate", "guard", "train"]
    assert stages.engine_names() == ["augment", "generate", "extend"]
    assert [(engine, [s.name for s in run]) for engine, run in loop.engine_runs(stages.STAGES)] == [
        (True, ["augment", "generate", "extend"]), (False, ["curate", "guard", "train"])]
    for each in stages.STAGES:
        assert each.unit and all(not w.startswith("/") for w in each.writes), each.name
    assert {w for s in stages.STAGES for w in s.writes} >= {"instructions.jsonl", "initial.jsonl", "extended.jsonl",
                                                           "sft/generator.jsonl", "adapters/generator"}


class FakeEngine:
    """Counts what the stand-in stages ask of it, as an engine's usage()."""

    def __init__(self, opened: list):
        self.served = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        opened.append(self)

    def serve(self, n: int) -> None:
        self.served = {k: v + n * (1 if k == "requests" else 10) for k, v in self.served.items()}

    def usage(self) -> dict:
        return {"generator": {"path": "model", **self.served}}


# what each real stage's manifest holds, as far as the metrics read it
MANIFESTS = {
    "augment": {"instructions": 1},
    "generate": {"quality": {"pass_rate": 1.0, "failures": {}}, "passed_quality": 1, "samples_wanted": 1,
                 "kept_after_drop_short": 1},
    "extend": {"quality": {"pass_rate": 1.0, "failures": {}}, "attempt_accept_rate": 1.0, "accepted": 1,
               "kept_after_drop_short": 1},
    "curate": {"generator": 1, "extender": 1},
    "guard": {"check": False},
    "train": {"generator": 1, "extender": 1},
}
ROW = {"instruction": "Write about rivers.", "language": "en", "response": "rivers flow " * 20, "words": 40,
       "initial_words": 20, "initial": "rivers flow"}


def stand_in(name: str, ran: list):
    """A stage body that writes what the real stage's manifest and files would hold for the metrics."""
    def body(chosen, inputs) -> Output:
        it = inputs.paths
        ran.append((name, inputs.engine))
        if inputs.engine is not None:
            inputs.engine.serve(2)
            time.sleep(0.02)  # a measured stage took some time (engine_usage.json keeps 2 decimals)
        files = {"augment": it.instructions, "generate": it.initial, "extend": it.extended}
        if name in files:
            artifacts.write_jsonl(files[name], [ROW])
        extra = {"first_try_words": [40]} if name == "generate" else {}
        return Output(counts=MANIFESTS.get(name, {"trained": 1}), outputs=[], extra=extra)

    return body


MADE_UP = Stage("made_up", unit="step", settings=lambda s: s.seed, body=None, engine=True, writes=("made_up.jsonl",))


@pytest.fixture
def one_line_more(monkeypatch):
    """The stage list with one line added (MADE_UP, after train), every body a stand-in."""
    ran: list = []
    listed = [dataclasses.replace(s, body=stand_in(s.name, ran)) for s in (*stages.STAGES, MADE_UP)]
    monkeypatch.setattr(stages, "STAGES", tuple(listed))
    return ran


def test_a_made_up_stage_added_by_one_line_runs_in_the_loop_and_appears_everywhere(
        one_line_more, tmp_path, compose_config, monkeypatch):
    opened: list = []

    @asynccontextmanager
    async def serving(*args):
        yield FakeEngine(opened)

    monkeypatch.setattr(loop, "serving", serving)
    monkeypatch.setattr(loop, "served_dtype", lambda model: {"requested": "auto", "served": "float32"})
    monkeypatch.setattr(loop, "instruction_pool", lambda seeds, paths, k: {})
    settings = typed(compose_config("model=tiny", "eval.every_iteration=false"))
    paths = artifacts.RunPaths(tmp_path / "run")
    logged: list[str] = []  # what the trackers are handed (observe: a stage complete under its contract)
    monkeypatch.setattr(Tracker, "log_stage", lambda self, it, name: logged.append(name))
    with observe.watching(settings, paths.root):
        result = loop.run_iteration(settings, paths, 1, "model", {})
    # the loop: in the list's order, the engine opened for each run of engine stages (the new stage's own)
    assert [name for name, _ in one_line_more] == [*stages.names()]
    assert len(opened) == 2 and [engine for name, engine in one_line_more if name == "made_up"] == [opened[1]]
    assert all(engine is None for name, engine in one_line_more if name in ("curate", "guard", "train"))
    # the stage contract: its manifest, and its engine usage beside the others'
    it = paths.iteration(1)
    assert it.stage_done("made_up") and artifacts.read_json(it.stage_manifest("made_up"))["counts"] == {"trained": 1}
    usage = artifacts.read_json(it.stage_manifest("engine_usage"))
    assert usage["made_up"]["completion_tokens"] == 20
    assert logged == stages.names()  # the trackers: every stage of the list, the new one too
    # the metrics: its seconds (and the tokens it cost the engine), as every stage's
    assert "made_up" in result["seconds"] and result["tokens"]["stages"]["made_up"]["requests"] == 2
    assert result == {**metrics.iteration_metrics(it, stages.names()), "seconds": result["seconds"]}
    # estimate: a row of its own each iteration, and a measured run's throughput of it
    assert "made_up" in stages.engine_names()
    found = measured.throughput(paths.root, stages.engine_names())
    assert set(found["per_stage"]) == {"augment", "generate", "extend", "made_up"}
    est = typed(compose_config("model=tiny", "estimate.tokens_per_s_per_gpu=3000", verb="estimate"), "estimate")
    table = estimate_command.compute(est)
    assert all(list(row["stages"]) == stages.engine_names() for row in table["iterations"])
    assert "   1  made_up " in estimate_command.render(table)
