"""The step contract (store/steps.py) on every verb: a rerun with a changed setting is
refused in one line naming the changed key (and the redo= that redoes it), or with redo=
redone with a log line; never silently kept. Cheap steps only: finalize's data steps
without a model (through the real CLI, with an empty model cache: nothing is built), eval
of a predictions file, agentwrite's and dpo's settings records on the real tiny model's
folder, and the comparison itself."""
from __future__ import annotations

import json

import pytest

from selflengthen.core.errors import UserError
from selflengthen.store import artifacts, steps
from tests.conftest import REPO, run_cli
from tests.test_finalize_cli import fake_run, one_line_error


# --- the comparison ------------------------------------------------------------------------

def step_at(tmp_path, made_with, legacy=None):
    return steps.Step("verb", "make", tmp_path, tmp_path / "manifests" / "make.json", made_with, "name=NEW",
                      legacy=legacy or {})


def test_changed_keys_are_dotted_and_sorted():
    before = {"a": {"b": 1, "c": [1, 2]}, "d": None, "e": 1}
    now = {"a": {"b": 2, "c": [1, 2]}, "d": {"x": 1}, "f": 1}
    assert steps.changed_keys(before, now) == ["a.b", "d", "e", "f"]
    assert steps.changed_keys(before, before) == []


def test_a_record_is_reused_refused_or_redone(tmp_path):
    first = step_at(tmp_path, {"seed": 0, "rules": {"min": 3}})
    assert steps.changes(first) is None and not steps.reusable(first)  # no record: to be made
    artifacts.write_json(first.record, {"counts": {}, **first.fields()})
    assert steps.reusable(first)
    assert artifacts.read_json(first.record)["made_with"] == {"seed": 0, "rules": {"min": 3}}
    other = step_at(tmp_path, {"seed": 1, "rules": {"min": 4}})
    with pytest.raises(UserError) as err:
        steps.reusable(other)
    assert str(err.value) == (f"verb's make step in {tmp_path} was made with other settings (changed: rules.min, "
                              "seed); rerun with the settings it was made with, write elsewhere with name=NEW, or "
                              "pass redo=make to redo it and the steps after it")
    assert first.record.exists()  # a refusal loses nothing
    assert not steps.reusable(other, redo=True) and not first.record.exists()  # redone: the old record goes


def test_a_record_from_before_made_with_keeps_the_older_rule(tmp_path):
    legacy = step_at(tmp_path, {"seed": 1}, legacy={"config_hash": "abc"})
    artifacts.write_json(legacy.record, {"counts": {}})  # no digest at all: done
    assert steps.reusable(legacy)
    artifacts.write_json(legacy.record, {"config_hash": "abc"})  # the digest computed the old way matches
    assert steps.reusable(legacy)
    artifacts.write_json(legacy.record, {"config_hash": "def"})
    with pytest.raises(UserError, match=r"changed: \(unnamed: its manifest recorded only a digest"):
        steps.reusable(legacy)


def test_redo_names_a_step_of_the_verb():
    assert steps.redo_set("finalize", ("collect", "constrain", "export"), "constrain") == {"constrain", "export"}
    assert steps.redo_set("finalize", ("collect",), None) == set()
    with pytest.raises(UserError, match="redo=nope is not a step of finalize; choose one of collect"):
        steps.redo_set("finalize", ("collect",), "nope")


def test_plain_and_file_digest(tmp_path):
    from selflengthen.engines import Sampling

    assert steps.plain({"s": Sampling(stop=("x",)), "p": tmp_path})["s"]["stop"] == ["x"]
    (tmp_path / "a").write_text("one")
    assert steps.file_digest(tmp_path / "a") != steps.file_digest(tmp_path / "b") is None


# --- finalize: the real CLI, no model anywhere ----------------------------------------------

def test_finalize_without_the_model_builds_nothing_and_refuses_a_changed_setting(tmp_path):
    """collect, constrain, export with finalize.rewrite.use_model=false on a hand-made run,
    the model cache an empty folder: nothing is built there, no engine, no Ray; a rerun with
    another constraint setting is refused in one line naming it; redo=constrain redoes
    constrain (a word in the log), export when its input changed, and keeps collect."""
    root = fake_run(tmp_path / "r", {1: [300, 400, 500]})
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    args = ("finalize", str(root), f"paths.cache_dir={cache}", "finalize.rewrite.use_model=false")
    proc = run_cli(*args, cwd=REPO, env={"SELFLENGTHEN_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(cache.iterdir()) == [] and "engine" not in proc.stderr and "Ray" not in proc.stderr
    manifests = root / "final" / "manifests"
    constrain = artifacts.read_json(manifests / "constrain.json")
    assert constrain["made_with"]["constraints"]["min_words"] == 200 and constrain["made_with"]["model"] is None
    collected = (manifests / "collect.json").stat().st_mtime_ns

    line = one_line_error(run_cli(*args, "finalize.constraints.min_words=250", cwd=REPO))
    assert f"finalize's constrain step in {root / 'final'} was made with other settings " \
           "(changed: constraints.min_words)" in line
    assert "finalize.output_dir=NEW" in line and "redo=constrain" in line

    proc = run_cli(*args, "finalize.constraints.min_words=250", "redo=constrain", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "redoing the constrain step" in proc.stderr
    export = artifacts.read_json(manifests / "export.json")["made_with"]  # redone only when its input changed
    assert export["constrained"] == steps.file_digest(root / "final" / "constrained.jsonl")
    assert artifacts.read_json(manifests / "constrain.json")["made_with"]["constraints"]["min_words"] == 250
    assert (manifests / "collect.json").stat().st_mtime_ns == collected  # made with the same: kept
    assert list(cache.iterdir()) == []


# --- dpo: its steps' records (the scripted engine of test_dpo_samples: the contract is the logic) ----

def test_dpo_refuses_changed_samples_and_pairs_settings_and_redoes_them_on_request(tmp_path, monkeypatch):
    from selflengthen.commands import dpo as command
    from selflengthen.evaluation.benchmarks import get_benchmark, load_items
    from tests.fakes import ScriptedEngine
    from tests.test_dpo_samples import _cfg, _patch, serve, writer

    bench, items = get_benchmark("heldout_tiny"), load_items("heldout_tiny", limit=2)
    paths = command.DpoPaths(tmp_path / "job")
    cfg = _cfg("dpo.penalties=[]")  # the scripted samples are one word repeated: every one would score 0
    _patch(monkeypatch, ScriptedEngine(writer), None)
    samples, info = command.make_samples(cfg, paths, bench, items, serve(cfg, {}))
    assert artifacts.read_json(paths.manifest("samples"))["made_with"]["seed"] == cfg.seed
    pairs, pairs_info = command.make_pairs(cfg.dpo, paths, samples, info)
    _patch(monkeypatch, None, None)  # nothing may be generated below but on redo
    other = _cfg("seed=3")
    with pytest.raises(UserError, match=r"dpo's samples step in .* \(changed: seed\); .* name=NEW, or pass "
                                        r"redo=samples"):
        command.make_samples(other, paths, bench, items, serve(other, {}))
    strict = _cfg("dpo.min_margin=7", "dpo.penalties=[]")
    with pytest.raises(UserError, match=r"dpo's pairs step .* \(changed: min_margin\)"):
        command.make_pairs(strict.dpo, paths, samples, info)
    assert artifacts.read_jsonl(paths.pairs) == pairs  # kept
    again, again_info = command.make_pairs(strict.dpo, paths, samples, info, redo={"pairs", "train"})
    assert again_info["made_with"]["min_margin"] == 7 and again_info["settings_hash"] != pairs_info["settings_hash"]
    assert command.make_pairs(strict.dpo, paths, samples, info)[1] == again_info  # made with these now: reused
    assert "penalties" not in again_info["made_with"]  # none: a pairs step made before they existed matches
    penalised = _cfg("dpo.min_margin=7", "dpo.penalties=[termination]")
    with pytest.raises(UserError, match=r"dpo's pairs step .* \(changed: penalties\)"):
        command.make_pairs(penalised.dpo, paths, samples, info)
    gen = ScriptedEngine(writer)
    _patch(monkeypatch, gen, None)
    command.make_samples(other, paths, bench, items, serve(other, {}), redo={"samples", "pairs", "train"})
    assert len(gen.calls) == len(samples)  # every sample made again with the new seed


# --- agentwrite: the write step's record ----------------------------------------------------

def test_agentwrite_refuses_other_settings_through_the_cli_before_any_engine(tmp_path, model_cache, tiny_model):
    """A folder whose record (here one from an earlier version: the settings alone) names
    another seed: the real CLI refuses in one line naming it, before any engine starts."""
    src = tmp_path / "instructions.jsonl"
    src.write_text(json.dumps({"instruction": "Write about rivers.", "language": "en"}) + "\n")
    out = tmp_path / "aw" / "mine"
    artifacts.write_json(out / "settings.json", {"seed": 99})
    artifacts.write_jsonl(out / "checkpoint.jsonl", [])
    proc = run_cli("agentwrite", f"input={src}", f"out_dir={tmp_path / 'aw'}", "name=mine",
                   f"paths.cache_dir={model_cache}", cwd=REPO)
    line = one_line_error(proc)
    assert f"agentwrite's write step in {out} was made with other settings (changed: seed)" in line
    assert "name=NEW" in line and "redo=write" in line and "engine" not in proc.stderr
    assert (out / "checkpoint.jsonl").exists()


def test_agentwrite_write_step_records_reuses_and_redoes(tmp_path):
    from selflengthen.commands.agentwrite import write_step

    out = tmp_path / "aw"
    made = {"model": "m", "adapter": None, "seed": 0, "sampling": {"temperature": 0.7}, "agentwrite": {},
            "input": "abc"}
    write_step(out, made, None)
    assert artifacts.read_json(out / "settings.json")["made_with"] == made
    artifacts.write_jsonl(out / "checkpoint.jsonl", [{"id": "a", "kind": "plan"}])
    write_step(out, made, None)  # the same: resumed
    assert (out / "checkpoint.jsonl").exists()
    with pytest.raises(UserError, match=r"\(changed: input, sampling.temperature\)"):
        write_step(out, {**made, "input": "def", "sampling": {"temperature": 0.9}}, None)
    write_step(out, {**made, "input": "def"}, "write")  # redone: the earlier texts are not resumed
    assert not (out / "checkpoint.jsonl").exists()
    assert artifacts.read_json(out / "settings.json")["made_with"]["input"] == "def"


# --- eval: a predictions file (no model) ----------------------------------------------------

def test_eval_of_a_changed_predictions_file_is_refused_then_redone(tmp_path, compose_config):
    from selflengthen.commands.eval import run_eval
    from selflengthen.evaluation.benchmarks import load_items

    pred = tmp_path / "preds.jsonl"

    def write(words: int) -> None:
        rows = [{**item, "response": "word " * words} for item in load_items("heldout_tiny", limit=2)]
        pred.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def evaluate(*extra):
        return run_eval(compose_config("benchmark=heldout_tiny", f"predictions={pred}", f"out_dir={tmp_path / 'eval'}",
                                       "name=mine", *extra, verb="eval"))

    write(10)
    [(summary, out)] = evaluate()
    record = artifacts.read_json(out / "steps" / "predict.json")
    assert record["made_with"] == {"predictions": steps.file_digest(pred)}
    assert evaluate()[0][0]["mean_words"] == summary["mean_words"] == 10  # the same: resumed
    write(30)
    with pytest.raises(UserError) as err:
        evaluate()
    assert str(err.value).startswith(f"eval's predict step in {out} was made with other settings "
                                     "(changed: predictions)") and "redo=predict" in str(err.value)
    assert artifacts.read_json(out / "summary.json")["mean_words"] == 10  # nothing lost
    assert evaluate("redo=predict")[0][0]["mean_words"] == 30  # redone
    with pytest.raises(UserError, match="redo=train is not a step of eval; choose one of predict, judge"):
        evaluate("redo=train")


# --- the loop: a real stage (curate: no engine) with the loop's own redo rule ---------------

def test_a_loop_stage_made_otherwise_is_refused_and_redo_of_an_earlier_stage_redoes_it(tmp_path, compose_config):
    import asyncio
    from dataclasses import replace

    from selflengthen.pipeline import loop, stage
    from selflengthen.pipeline.stages import curate
    from tests.fakes import stage_inputs, typed

    it = artifacts.RunPaths(tmp_path / "run").iteration(1)
    artifacts.write_jsonl(it.extended, [{"id": f"r{i}", "instruction": f"Write about {i}.", "language": "en",
                                         "response": "word " * 50, "initial": "\n".join(f"Line {j} of {i}." for j in range(20))}
                                        for i in range(4)])
    settings = typed(compose_config())
    assert asyncio.run(stage.run_stage(curate.STAGE, settings, stage_inputs(settings, it)))["generator"] == 4
    first = steps.file_digest(it.sft("extender"))
    other = typed(compose_config("loop.curate.line_keep_prob=0.5"))
    with pytest.raises(UserError) as err:
        asyncio.run(stage.run_stage(curate.STAGE, other, stage_inputs(other, it)))
    assert str(err.value).startswith(f"run's curate step in {it.root} was made with other settings "
                                     "(changed: settings.line_keep_prob)")
    assert "run.name=NEW" in str(err.value) and steps.file_digest(it.sft("extender")) == first  # nothing lost
    redo = typed(compose_config("loop.curate.line_keep_prob=0.5", "redo=generate"))
    inputs = replace(stage_inputs(redo, it), owner=stage.Owner(redo=loop.redo_stages(redo)))
    assert asyncio.run(stage.run_stage(curate.STAGE, redo, inputs)) is not None  # after generate: redone
    assert artifacts.read_json(it.stage_manifest("curate"))["made_with"]["settings"]["line_keep_prob"] == 0.5
    assert steps.file_digest(it.sft("extender")) != first
    with pytest.raises(UserError, match="redo=nope is not a step of run; choose one of augment, generate, extend"):
        loop.redo_stages(typed(compose_config("redo=nope")))


def test_eval_needs_no_judge_engine_once_every_answer_is_judged_and_redo_judge_forgets_them(tmp_path):
    """The judge step's reuse: answers judged by an earlier invocation need no engine
    (run_judge without one); forget_judgements (redo=judge) keeps the answers only."""
    import asyncio

    from selflengthen.evaluation import benchmarks, runner, scoring
    from tests.fakes import ScriptedEngine
    from tests.test_segment_judge import judge_answer

    bench = benchmarks.get_benchmark("heldout_tiny")
    items = benchmarks.load_items("heldout_tiny", limit=2)
    rows = [scoring.prediction_row(bench, items[0], "Some text here."), scoring.prediction_row(bench, items[1], "")]
    paths = runner.EvalPaths(tmp_path / "mine")
    assert not runner.all_judged(paths, rows)
    engine = ScriptedEngine(judge_answer)
    judged, _ = asyncio.run(runner.run_judge(engine, bench, rows, paths, runner.Sampling(), 2, {"segments": 0}))
    runner.finish(paths, bench, judged, {})
    assert runner.all_judged(paths, rows)  # the empty answer needs no judge
    again, info = asyncio.run(runner.run_judge(None, bench, rows, paths, runner.Sampling(), 2, {"segments": 0}))
    assert again == judged and info["prompt_tokens"] == 0 and len(engine.requests) == 1
    runner.forget_judgements(paths)
    assert not runner.all_judged(paths, rows)
    assert [r["response"] for r in artifacts.read_jsonl(paths.predictions)] == [r["response"] for r in rows]
