"""`loop.synth`: how an iteration's longer responses are made (stages/synth.py), on a
scripted engine (pure logic: which rows, tags, drafts, manifests, what curate makes of
them), and the config rules around it (a run saved before loop.synth existed resumes as
`extend`). The real loop with loop.synth=agentwrite runs in the slow test at the end."""
from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selflengthen import config, preflight
from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.engines import Sampling
from selflengthen.pipeline import metrics, stage
from selflengthen.pipeline.stages import curate, synth
from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli
from tests.fakes import ScriptedEngine, stage_inputs, typed


def compose_cfg(*overrides: str, name: str = "config"):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


_fresh = itertools.count()


def words(n: int) -> str:
    """n words never written before (no repeated n-grams), ending in a full stop."""
    return " ".join(f"w{next(_fresh)}" for _ in range(n)) + "."


def respond(request, sampling) -> str:
    text = request.messages[0]["content"]
    if "draw up a plan" in text:  # the plan: two lines (the tiny preset prefills the first label)
        return " Opening - Word count: 300 words\nParagraph 2 - Main point: Closing - Word count: 200 words"
    if "The plan:\n" in text:  # one paragraph
        return words(40)
    return "\n\n".join(words(30) for _ in range(4))  # the extender: longer than any draft


def iteration(tmp_path, with_drafts=("i-0", "i-1")) -> artifacts.IterationPaths:
    it = artifacts.IterationPaths(tmp_path / "iter_1", 1)
    artifacts.write_jsonl(it.instructions, [{"id": f"i-{n}", "language": "en", "instruction": f"Write about {n}."}
                                            for n in range(3)])
    artifacts.write_jsonl(it.initial, [
        {"id": f"{i}-s{j}", "instruction_id": i, "language": "en", "instruction": "x",
         "response": "\n\n".join(words(10) for _ in range(2)), "words": 22, "tries": 1}
        for i in with_drafts for j in (1, 0)])
    return it


def run_synth(cfg, it):
    engine = ScriptedEngine(respond)
    settings = typed(cfg)
    return engine, asyncio.run(stage.run_stage(synth.STAGE, settings, stage_inputs(settings, it, engine, Sampling())))


@pytest.mark.parametrize("method", ["extend", "agentwrite", "both"])
def test_synth_rows_are_tagged_and_curate_trains_both_roles_on_them(tmp_path, method):
    # the scripted extensions grow by more than the tiny preset's bound; the bound is tested in test_stages.py
    cfg = compose_cfg(f"loop.synth={method}", "loop.extend.drop_short=false", "loop.extend.max_growth=null")
    it = iteration(tmp_path)
    engine, counts = run_synth(cfg, it)
    rows = artifacts.read_jsonl(it.extended)
    made = {r["method"] for r in rows}
    assert made == ({"extend", "agentwrite"} if method == "both" else {method})
    assert counts["synth"] == method and counts["rows_by_method"] == {m: sum(r["method"] == m for r in rows)
                                                                      for m in counts["by_method"]}
    manifest = artifacts.read_json(it.stage_manifest("extend"))
    assert manifest["counts"]["accepted"] == len(rows) and set(manifest["counts"]["by_method"]) == (
        {"extend", "agentwrite"} if method == "both" else {method})
    assert not it.checkpoint("extend").exists() and not it.checkpoint("agentwrite").exists()
    aw = [r for r in rows if r["method"] == "agentwrite"]
    if method != "extend":
        assert sorted(r["instruction_id"] for r in aw) == ["i-0", "i-1", "i-2"]
        by_id = {r["instruction_id"]: r for r in aw}
        # the draft is the instruction's first surviving generator sample; i-2 has none
        assert by_id["i-0"]["initial_id"] == "i-0-s0" and by_id["i-2"]["initial"] == ""
        assert [p["planned_words"] for p in by_id["i-0"]["paragraphs"]] == [300, 200]
        assert by_id["i-0"]["words"] == 2 * 40
        plan_calls = [r for r in engine.requests if "draw up a plan" in r.messages[0]["content"]]
        assert len(plan_calls) == 3 and {r.prefix for r in plan_calls} == {"Paragraph 1 - Main point:"}
    else:
        assert not [r for r in engine.requests if "draw up a plan" in r.messages[0]["content"]]
    asyncio.run(stage.run_stage(curate.STAGE, typed(cfg), stage_inputs(typed(cfg), it)))
    gen = artifacts.read_jsonl(it.sft("generator"))
    ext = artifacts.read_jsonl(it.sft("extender"))
    assert [r["method"] for r in gen] == [r["method"] for r in rows]  # every row trains the generator
    assert len(ext) == len(rows) - sum(not r["initial"] for r in rows)  # the extender needs a draft
    for record in gen:
        row = next(r for r in rows if r["id"] == record["id"])
        assert record["messages"][-1]["content"] == row["response"]


def test_agentwrite_rows_failing_the_filter_are_dropped(tmp_path):
    cfg = compose_cfg("loop.synth=agentwrite", "agentwrite.filter.min_words=81")
    it = iteration(tmp_path)
    _, counts = run_synth(cfg, it)
    assert artifacts.read_jsonl(it.extended) == [] and counts["by_method"]["agentwrite"]["dropped"] == {
        "too_short": 3}
    cfg = compose_cfg("loop.synth=agentwrite", "agentwrite.filter.max_words=79")
    it = iteration(tmp_path / "b")
    _, counts = run_synth(cfg, it)
    assert counts["accepted"] == 0 and counts["by_method"]["agentwrite"]["dropped"] == {"too_long": 3}


def test_metrics_show_lengths_per_method(tmp_path):
    rows = [{"words": 100, "initial_words": 50, "method": "extend"},
            {"words": 300, "initial_words": 0, "method": "agentwrite"},
            {"words": 200, "initial_words": 100}]  # a row from before loop.synth: the extender's
    it = artifacts.IterationPaths(tmp_path, 1)
    artifacts.write_jsonl(it.extended, rows)
    by_method = {m: metrics.length_stats([r["words"] for r in rows if r.get("method", "extend") == m])
                 for m in ("agentwrite", "extend")}
    assert by_method["extend"]["mean"] == 150.0 and by_method["agentwrite"]["n"] == 1


# --- config ----------------------------------------------------------------------------------

def test_synth_and_agentwrite_config_problems_are_reported():
    found = preflight.problems(compose_cfg("loop.synth=teacher", "agentwrite.max_items_in_flight=0",
                                        "agentwrite.filter.min_words=500", "agentwrite.filter.max_words=100"))
    assert len(found) == 3, found
    assert any("loop.synth='teacher'" in p for p in found)
    assert preflight.problems(compose_cfg(name="agentwrite"), verb="agentwrite") == []


def method(cfg) -> schema.Method:
    return schema.Config.model_validate(OmegaConf.to_container(cfg, resolve=True)).method


def test_agentwrite_settings_are_part_of_the_method_only_when_it_runs():
    extend, aw = method(compose_cfg()), method(compose_cfg("loop.synth=agentwrite"))
    assert extend.agentwrite is None and aw.agentwrite is not None
    assert method(compose_cfg("agentwrite.max_steps=9")) == extend


def test_a_run_saved_before_loop_synth_resumes_as_extend(tmp_path):
    saved = OmegaConf.to_container(compose_cfg(), resolve=True)
    del saved["loop"]["synth"], saved["agentwrite"]  # what a run started before loop.synth saved
    assert config.saved_method(saved, "config.yaml") == method(compose_cfg())
    assert config.saved_method(saved, "config.yaml").changes(method(compose_cfg("loop.synth=agentwrite"))) == \
        ["agentwrite", "loop.synth"]
    run = tmp_path / "tiny"
    run.mkdir()
    OmegaConf.save(OmegaConf.create(saved), run / "config.yaml")
    from selflengthen.pipeline import loop

    def start(*overrides):
        cfg = compose_cfg(f"paths.iterations_dir={tmp_path}", *overrides)
        return loop.start_run(schema.Config.model_validate(OmegaConf.to_container(cfg, resolve=True)))

    assert start().root == run
    with pytest.raises(UserError, match="loop.synth"):
        start("loop.synth=agentwrite")


# --- the real loop ---------------------------------------------------------------------------

def check_an_agentwrite_iteration(run_root) -> None:
    """The assertions on a 1-iteration run with loop.synth=agentwrite (the sweep over
    loop.synth in tests/test_sweep.py runs one: one CLI run serves both tests' purposes)."""
    it = artifacts.RunPaths(run_root).iteration(1)
    rows = artifacts.read_jsonl(it.extended)
    instructions = {r["id"] for r in artifacts.read_jsonl(it.instructions)}
    assert rows and {r["method"] for r in rows} == {"agentwrite"}
    assert {r["instruction_id"] for r in rows} <= instructions
    for row in rows:
        assert row["response"] and len(row["paragraphs"]) == len(row["plan"]) >= 1
    counts = artifacts.read_json(it.stage_manifest("extend"))["counts"]
    assert counts["synth"] == "agentwrite" and counts["accepted"] == len(rows)
    assert "extend" not in counts["by_method"]  # the extender wrote nothing
    assert not it.checkpoint("agentwrite").exists()
    gen = artifacts.read_jsonl(it.sft("generator"))
    assert len(gen) == len(rows) and {r["method"] for r in gen} == {"agentwrite"}
    for role in ("generator", "extender"):  # both adapters trained on AgentWrite's rows
        info = artifacts.read_json(it.stage_manifest(f"train_{role}"))
        assert info["examples"] > 0 and (it.adapter(role) / "adapter_config.json").exists()
    m = json.loads(it.metrics.read_text())
    assert m["synth"] == "agentwrite" and m["words"]["extended_by_method"]["agentwrite"]["n"] == len(rows)
    usage = artifacts.read_json(it.stage_manifest("engine_usage"))["extend"]
    assert usage["adapters"]["base"]["requests"] == counts["by_method"]["agentwrite"]["requests"]
