"""With a judge, each response is also judged part by part (judge.segments parts, each read
after the text before it, our own "segment" rubric), so a summary says where a long text
decays; the segment plot gets the judge's panel."""
from __future__ import annotations

import asyncio
import json
import re

from selflengthen.evaluation import benchmarks, plots, rubrics, runner, scoring
from selflengthen.store.samples import SampleLog
from tests.fakes import ScriptedEngine

WHOLE = {d: 4 for d in rubrics.RUBRICS["longbench"].dimensions}


def judge_answer(request, sampling):
    """Whole responses get 4s; a part gets 5s unless it is the last part, which loops (1s)."""
    prompt = request.messages[-1]["content"]
    part = re.search(r"part (\d) of (\d)", prompt)
    if part is None:
        return json.dumps({"analysis": "fine", **WHOLE})
    last = part.group(1) == part.group(2)
    assert "[Writing before this part]" in prompt
    return json.dumps({"analysis": "-", "coherence": 1 if last else 5, "substance": 1 if last else 5,
                       "freshness": 1 if last else 5})


def test_each_part_is_judged_in_context_and_the_summary_says_where_it_decays(tmp_path):
    bench = benchmarks.get_benchmark("heldout_tiny")
    items = benchmarks.load_items("heldout_tiny", limit=2)
    text = " ".join(f"word{i}." for i in range(40))
    rows = [scoring.prediction_row(bench, item, text) for item in items]
    engine = ScriptedEngine(judge_answer)
    judged = asyncio.run(runner.judge_predictions(engine, bench, rows, runner.Sampling(), 2,
                                                  SampleLog(tmp_path / "j.jsonl"), segments=4))
    assert all(r["segment_quality"] == [100.0, 100.0, 100.0, 0.0] for r in judged)
    assert all(r["quality"] == 75.0 for r in judged)  # the whole answer, (4 - 1) * 25
    firsts = [r for r in engine.requests if "part 1 of 4" in r.messages[-1]["content"]]
    assert len(engine.requests) == 2 * 5 and all("(none: the first part)" in r.messages[-1]["content"]
                                                 for r in firsts)
    third = next(r for r in engine.requests if "part 3 of 4" in r.messages[-1]["content"])
    assert "word0. word1." in third.messages[-1]["content"]  # the text before the part is given
    summary = scoring.summarize(bench, judged)
    assert summary["quality"]["by_segment"] == [100.0, 100.0, 100.0, 0.0]
    png = plots.plot_segments({0: summary["signals"], 1: summary["signals"]}, tmp_path / "s.png", "t",
                              judged={1: summary["quality"]["by_segment"]})
    assert png.exists() and png.stat().st_size > 0


def test_segments_off_asks_only_for_the_whole_answer(tmp_path):
    bench = benchmarks.get_benchmark("heldout_tiny")
    rows = [scoring.prediction_row(bench, benchmarks.load_items("heldout_tiny", limit=1)[0], "Some text here.")]
    engine = ScriptedEngine(judge_answer)
    judged = asyncio.run(runner.judge_predictions(engine, bench, rows, runner.Sampling(), 2,
                                                  SampleLog(tmp_path / "j.jsonl"), segments=0))
    assert len(engine.requests) == 1 and "segment_quality" not in judged[0]
    assert scoring.summarize(bench, judged)["quality"]["by_segment"] is None


def test_the_segment_prompt_is_ours_in_both_languages():
    for language in ("en", "zh"):
        messages = rubrics.segment_messages("Write about tea.", "x" * 7000, "The part.", 2, 4, language)
        content = messages[0]["content"]
        assert "The part." in content and "Write about tea." in content and "{" not in content.split('"analysis"')[0]
        assert "x" * rubrics.SEGMENT_CONTEXT_CHARS in content and "x" * 7000 not in content  # only the end of it
    assert rubrics.parse_judgement("segment", '{"连贯": 4, "充实": 3, "不重复": 2}') == {
        "coherence": 4, "substance": 3, "freshness": 2}
