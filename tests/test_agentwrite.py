"""AgentWrite: plan parsing and prompt building on literal strings, and the plan-then-write
chain on a scripted engine (order of calls, resume after a kill, rejected plans, empty
steps). No model: the engine's answers are written out here."""
from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selflengthen.config import schema
from selflengthen.store import artifacts
from selflengthen.agentwrite.plan import (
    Plan,
    PlanStep,
    format_step,
    number_value,
    parse_plan,
    plan_request,
    tail_within,
    write_request,
)
from selflengthen.agentwrite.write import agentwrite_all, kept_signals, plan_vs_actual, plot_plan_vs_actual
from selflengthen.core import signals
from tests.fakes import ScriptedEngine, held_until

CONF = Path(__file__).resolve().parent.parent / "conf" / "agentwrite" / "default.yaml"


def conf(**overrides):
    """The shipped agentwrite settings (conf/agentwrite/default.yaml) with `overrides`, typed."""
    return schema.AgentWrite.model_validate(OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(CONF), overrides)))


def steps(*triples) -> tuple[PlanStep, ...]:
    return tuple(PlanStep(i, point, words) for i, (point, words) in enumerate(triples, 1))


# --- plan parsing ----------------------------------------------------------------------

GOOD_PLANS = [
    pytest.param(
        "Paragraph 1 - Main point: Introduce Lyon, its two rivers and its history - Word count: 400 words\n"
        "Paragraph 2 - Main point: The food of the bouchons - Word count: 600 words",
        steps(("Introduce Lyon, its two rivers and its history", 400), ("The food of the bouchons", 600)),
        id="en-requested-format"),
    pytest.param(
        "第1段 - 要点：介绍故事的时代背景 - 字数：400字\n第2段 - 要点：主人公登场，交代他的身世 - 字数：800字",
        steps(("介绍故事的时代背景", 400), ("主人公登场，交代他的身世", 800)),
        id="zh-requested-format"),
    pytest.param(
        "Sure! Here is the plan:\n\n"
        "Paragraph 1 - Main point: Opening - Word count: 300 words\n"
        "Paragraph 2 - Main point: Closing - Word count: 300 words\n\n"
        "Total: 600 words. Let me know if you want changes!",
        steps(("Opening", 300), ("Closing", 300)),
        id="en-intro-and-outro-ignored"),
    pytest.param(
        "**Paragraph 1**\n- Main point: The storm hits the harbour\n- Word count: ~350 words\n\n"
        "**Paragraph 2**\n- Main point: Rebuilding, 1990-2000\n- Word Count: 1,200 words",
        steps(("The storm hits the harbour", 350), ("Rebuilding, 1990-2000", 1200)),
        id="en-markdown-bold-with-field-lines"),
    pytest.param(
        "1. Intro (about 250 words)\n2) Body: the argument\n(3) Conclusion — 300 words",
        steps(("Intro", 250), ("Body: the argument", None), ("Conclusion", 300)),
        id="en-numbering-styles-and-missing-count"),
    pytest.param(
        "Step 1: Set the scene. Word count: 400-500 words\nPart 2 - Main point: The chase - 800 words\n"
        "Section 3 | Key point: The reveal | Words: 700",
        steps(("Set the scene.", 450), ("The chase", 800), ("The reveal", 700)),
        id="en-step-part-section-and-range-mean"),
    pytest.param(
        "第一段：描写清晨的村庄（约四百字）\n第二部分 - 要点：村民们的争吵 - 字数：一千二百字\n"
        "第三段－要点：和解（600-800字）",
        steps(("描写清晨的村庄", 400), ("村民们的争吵", 1200), ("和解", 700)),
        id="zh-chinese-numerals-fullwidth-punctuation"),
    pytest.param(
        "以下是写作计划：\n1、开篇点题，引出十字路口的故事，约300字\n2、回忆童年——字数：500字左右\n"
        "（3）结尾：升华主题（２００字）\n以上计划共计1000字。",
        steps(("开篇点题，引出十字路口的故事", 300), ("回忆童年", 500), ("结尾：升华主题", 200)),
        id="zh-prose-around-and-ten-is-no-count"),
    pytest.param(
        "Paragraph 1 - Main point: A point so long that the model wrapped it\n"
        "    onto a second line - Word count: 500 words\n"
        "Paragraph 2 - Main point: Next - Word count: 600 words",
        steps(("A point so long that the model wrapped it onto a second line", 500), ("Next", 600)),
        id="en-wrapped-continuation-joined"),
    pytest.param(
        "### Paragraph 1: Background\nMain point: Why the bridge was built.\n\nWord count: 450 words\n"
        "### Paragraph 2: Construction (700 words)",
        steps(("Background Why the bridge was built.", 450), ("Construction", 700)),
        id="en-headers-and-field-line-after-blank"),
    pytest.param(
        "1. Part one of the story (300 words)\n   1. a sub-point inside it\n   2. another sub-point\n"
        "2. Part two (500 words)",
        steps(("Part one of the story 1. a sub-point inside it 2. another sub-point", 300), ("Part two", 500)),
        id="en-nested-list-belongs-to-its-step"),
    pytest.param(
        "Paragraph 1 - Main point: Write the 5-word slogan and explain it - Word count: 0\n"
        "Paragraph 7 - Main point: Ends here - Word count: 250 words",
        steps(("Write the 5-word slogan and explain it", None), ("Ends here", 250)),
        id="en-zero-count-is-none-and-steps-renumbered"),
    pytest.param(
        "段落1：总述 - 篇幅：三百字\n段落2：分述 - 字数 800",
        steps(("总述", 300), ("分述", 800)),
        id="zh-duanluo-labels"),
]


@pytest.mark.parametrize("text,expected", GOOD_PLANS)
def test_parse_good_plans(text, expected):
    plan = parse_plan(text, "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en")
    assert plan.rejected is None
    assert plan.steps == expected


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("  \n\n ", "empty"),
    ("I'm sorry, but I can't help with that.", "no_steps"),
    ("这个任务我无法完成。", "no_steps"),
    ("Here is the plan:\n\n**Paragraph 1**\n\nThanks!", "no_steps"),
    ("\n".join(f"Paragraph {i} - Main point: part {i} - Word count: 200 words" for i in range(1, 52)), "too_long"),
])
def test_parse_rejected_plans(text, reason):
    assert parse_plan(text, "en").rejected == reason


def test_fifty_steps_is_not_too_long_and_prose_is_not_counted():
    text = "Plan:\n" + "\n".join(f"{i}. part {i} (300 words)" for i in range(1, 51)) + "\nDone.\nEnjoy."
    plan = parse_plan(text, "en", max_steps=50)
    assert plan.rejected is None and len(plan.steps) == 50


@pytest.mark.parametrize("language", ["en", "zh"])
def test_format_step_round_trips(language):
    plan = Plan(steps(("Explain {braces} and 1990-2000 events", 400), ("点明主题", None)))
    text = "\n".join(format_step(s, language) for s in plan.steps)
    assert parse_plan(text, language) == plan


@pytest.mark.parametrize("text,value", [("400", 400), ("1,200", 1200), ("４００", 400), ("四百", 400),
                                        ("一千二百", 1200), ("两千", 2000), ("十五", 15), ("一万二千", 12000),
                                        ("一百零五", 105), ("abc", None)])
def test_number_value(text, value):
    assert number_value(text) == value


def test_with_default_words_fills_only_missing_counts():
    plan = Plan(steps(("a", 300), ("b", None))).with_default_words(500)
    assert [s.words for s in plan.steps] == [300, 500]


# --- prompts ---------------------------------------------------------------------------

def test_plan_request_literal():
    (message,) = plan_request("Write a guide to {x} beekeeping.", "en", min_words=200, max_words=1000)
    text = message["content"]
    assert message["role"] == "user"
    assert "Writing instruction:\nWrite a guide to {x} beekeeping.\n" in text
    assert "between 200 and 1000 words" in text
    assert "Paragraph 1 - Main point: <what this paragraph covers, in detail> - Word count: <number> words" in text
    zh = plan_request("写一篇关于长江的散文。", "zh", min_words=300, max_words=900)[0]["content"]
    assert "写作指令：\n写一篇关于长江的散文。\n" in zh and "每段在300到900字之间" in zh
    assert "第1段 - 要点：" in zh


def test_write_request_literal():
    plan = Plan(steps(("Origins of the craft", 300), ("Tools of the trade", 500), ("Where it goes next", 400)))
    written = "Beekeeping began long ago.\n\nBy 1900 it was an industry."
    (message,) = write_request("Write a guide to beekeeping.", plan, written, plan.steps[1], "en")
    text = message["content"]
    assert "Writing instruction:\nWrite a guide to beekeeping.\n" in text
    assert ("The plan:\nParagraph 1 - Main point: Origins of the craft - Word count: 300 words\n"
            "Paragraph 2 - Main point: Tools of the trade - Word count: 500 words\n"
            "Paragraph 3 - Main point: Where it goes next - Word count: 400 words\n") in text
    assert "Text written so far:\nBeekeeping began long ago.\n\nBy 1900 it was an industry.\n" in text
    assert ("the one for this line of the plan:\nParagraph 2 - Main point: Tools of the trade - "
            "Word count: 500 words\n") in text
    assert "short subtitle" in text and "without repeating" in text
    first = write_request("Write a guide.", plan, "", plan.steps[0], "en")[0]["content"]
    assert "Text written so far:\n(nothing yet: this is the first paragraph)\n" in first
    zh = write_request("写一篇散文。", Plan(steps(("开头", 300),)), "", PlanStep(1, "开头", 300), "zh")[0]["content"]
    assert "写作计划：\n第1段 - 要点：开头 - 字数：300字\n" in zh
    assert "已经写好的内容：\n（还没有，这是第一段）\n" in zh and "计划中的这一行：\n第1段 - 要点：开头 - 字数：300字\n" in zh


def test_text_so_far_over_the_budget_keeps_its_last_paragraphs():
    written = "\n\n".join(["A" * 50, "B" * 50, "C" * 50])
    assert tail_within(written, None, "en") == written
    assert tail_within(written, 200, "en") == written
    assert tail_within(written, 110, "en") == \
        "[... the beginning is left out here ...]\n\n" + "B" * 50 + "\n\n" + "C" * 50
    assert tail_within("x" * 300, 100, "zh") == "[……前文从略……]\n\n" + "x" * 100
    plan = Plan(steps(("a", 300), ("b", 300)))
    text = write_request("W", plan, written, plan.steps[1], "en", max_written_chars=60)[0]["content"]
    assert "C" * 50 in text and "A" * 50 not in text and "left out" in text


# --- the chain -------------------------------------------------------------------------

def is_write(request) -> bool:
    return "The plan:\n" in request.messages[0]["content"]


def step_of(request) -> int:
    """0 for a plan request, else the index of the plan line the request writes."""
    if not is_write(request):
        return 0
    line = request.messages[0]["content"].split("for this line of the plan:\n")[1].split("\n")[0]
    return int(re.match(r"Paragraph (\d+)", line).group(1))


def plan_text(key: str, n: int) -> str:
    return "Here is the plan:\n" + "\n".join(
        f"Paragraph {i} - Main point: {key} part {i} - Word count: {100 * i} words" for i in range(1, n + 1))


def writer(n_steps: int = 3):
    """Plans of n_steps lines; step i of item X is 'X wrote i.' repeated i times."""
    def respond(request, sampling):
        if not is_write(request):
            return plan_text(request.key, n_steps)
        i = step_of(request)
        return " ".join([f"{request.key} wrote {i}."] * i)
    return respond


ITEMS = [{"id": "a", "instruction": "Write about apples.", "language": "en"},
         {"id": "b", "instruction": "Write about bees.", "language": "en"},
         {"id": "c", "instruction": "写一篇关于猫的文章。", "language": "en"}]


def run(engine, items=ITEMS, cfg=None, checkpoint=None, seed=7):
    return asyncio.run(agentwrite_all(engine, items, cfg or conf(), seed=seed, checkpoint=checkpoint))


def test_chain_rows_and_stats():
    engine = ScriptedEngine(writer(3))
    rows, stats = run(engine)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    a = rows[0]
    assert a["plan"] == [{"index": i, "point": f"a part {i}", "planned_words": 100 * i} for i in (1, 2, 3)]
    assert a["response"] == "a wrote 1.\n\na wrote 2. a wrote 2.\n\na wrote 3. a wrote 3. a wrote 3."
    assert [p["words"] for p in a["paragraphs"]] == [3, 6, 9] and a["words"] == 18 and a["planned_words"] == 600
    assert [p["planned_words"] for p in a["paragraphs"]] == [100, 200, 300]
    assert stats["items"] == 3 and stats["planned"] == 3 and stats["steps_written"] == 9
    assert stats["requests"] == 12 and stats["empty_steps"] == 0
    assert stats["plans_rejected"] == {"empty": 0, "no_steps": 0, "too_long": 0}
    assert stats["tokens"]["completion"] == sum(len(engine.respond(r, s).split()) for r, s in engine.calls)
    # the write sampling's override applies to steps, the plan's to plans
    assert {s.max_tokens for r, s in engine.calls if is_write(r)} == {4096}
    assert {s.max_tokens for r, s in engine.calls if not is_write(r)} == {2048}


def test_steps_of_one_item_are_sequential_while_items_interleave():
    b_written = asyncio.Event()

    def delay(r):  # a's step 1 lasts until b's last step has been asked for
        if (r.key, step_of(r)) == ("b", 2):
            b_written.set()
        return held_until(b_written) if (r.key, step_of(r)) == ("a", 1) else 0.0

    engine = ScriptedEngine(writer(2), delay=delay)
    rows, _ = run(engine, ITEMS[:2])
    order = [(r.key, step_of(r)) for r in engine.requests]
    # b's whole chain is asked for while a's slow step 1 is still running (a's step 2 waits for it)
    assert order.index(("b", 1)) < order.index(("a", 2)) and order.index(("b", 2)) < order.index(("a", 2))
    for key in ("a", "b"):
        assert order.index((key, 0)) < order.index((key, 1)) < order.index((key, 2))
    # each step's prompt holds the text of the steps before it
    a2 = next(r for r in engine.requests if (r.key, step_of(r)) == ("a", 2))
    assert "Text written so far:\na wrote 1.\n" in a2.messages[0]["content"]
    assert rows[0]["response"].startswith("a wrote 1.")


def test_items_in_flight_bound():
    engine = ScriptedEngine(writer(2))
    run(engine, ITEMS[:2], cfg=conf(max_items_in_flight=1))
    keys = [r.key for r in engine.requests]
    assert keys == ["a"] * 3 + ["b"] * 3


def test_seeds_derive_from_item_and_step():
    first, second = ScriptedEngine(writer(2)), ScriptedEngine(writer(2))
    run(first, ITEMS)
    run(second, list(reversed(ITEMS)))
    seeds = lambda e: {(r.key, step_of(r)): r.seed for r in e.requests}  # noqa: E731
    assert seeds(first) == seeds(second)
    assert len(set(seeds(first).values())) == len(seeds(first))


class Killed(Exception):
    pass


@pytest.mark.parametrize("how", ["raise", "cancel"])
@pytest.mark.parametrize("after", [2, 5, 9])
def test_resume_after_a_kill_writes_no_paragraph_twice(tmp_path, how, after):
    checkpoint = tmp_path / "partial" / "agentwrite.jsonl"
    base, answered = writer(3), []

    def dies(request, sampling):
        if len(answered) == after:
            raise Killed() if how == "raise" else asyncio.CancelledError()
        answered.append(request)
        return base(request, sampling)

    killer = ScriptedEngine(dies)
    with pytest.raises((Killed, asyncio.CancelledError)):
        run(killer, checkpoint=checkpoint)
    before = artifacts.read_jsonl(checkpoint)
    finished = {(r["id"], r["index"]) for r in before if r["kind"] == "step"}
    planned = {r["id"] for r in before if r["kind"] == "plan"}
    assert len(before) == after

    fresh = ScriptedEngine(writer(3))
    rows, stats = run(fresh, checkpoint=checkpoint)
    asked = [(r.key, step_of(r)) for r in fresh.requests]
    assert not finished & set(asked), "a finished step was asked for again"
    assert not planned & {k for k, s in asked if s == 0}, "a finished plan was asked for again"
    union = Counter((r["id"], r["index"]) for r in artifacts.read_jsonl(checkpoint) if r["kind"] == "step")
    assert set(union) == {(k, i) for k in "abc" for i in (1, 2, 3)} and set(union.values()) == {1}
    assert stats["resumed_steps"] == len(finished) and stats["steps_written"] == 9
    assert stats["steps_this_run"] == 9 - len(finished)
    assert stats["requests"] == 12 - len(before)
    # the resumed run's rows are those of an uninterrupted run
    assert rows == run(ScriptedEngine(writer(3)))[0]


def test_rejected_plans_are_counted_and_never_written(tmp_path):
    plans = {"a": "", "b": "I cannot write this.",
             "c": "\n".join(f"{i}. part {i} (200 words)" for i in range(1, 52)), "d": plan_text("d", 2)}

    def respond(request, sampling):
        return plans[request.key] if not is_write(request) else "Some text."

    items = ITEMS + [{"id": "d", "instruction": "Write about dogs.", "language": "en"}]
    engine = ScriptedEngine(respond)
    checkpoint = tmp_path / "agentwrite.jsonl"
    rows, stats = run(engine, items, checkpoint=checkpoint)
    assert [r["id"] for r in rows] == ["d"]
    assert stats["plans_rejected"] == {"empty": 1, "no_steps": 1, "too_long": 1} and stats["planned"] == 1
    assert {r.key for r in engine.requests if is_write(r)} == {"d"}
    # a rerun does not plan them again
    again = ScriptedEngine(respond)
    _, stats2 = run(again, items, checkpoint=checkpoint)
    assert again.requests == [] and stats2["plans_rejected"] == stats["plans_rejected"]


def test_prefill_starts_the_plan_with_its_first_label():
    def planning(request) -> bool:
        return not is_write(request) and "写作计划：\n" not in request.messages[0]["content"]

    def respond(request, sampling):
        return " Opening - Word count: 300 words\n第2段 - 要点：结尾 - 字数：200字" if planning(request) else "Text."

    engine = ScriptedEngine(respond)
    items = [{"id": "a", "instruction": "Write.", "language": "en"}, {"id": "z", "instruction": "写。", "language": "zh"}]
    rows, _ = run(engine, items, cfg=conf(plan={"prefill": True}))
    assert {r.key: r.prefix for r in engine.requests if planning(r)} == {"a": "Paragraph 1 - Main point:",
                                                                             "z": "第1段 - 要点："}
    assert [[p["planned_words"] for p in r["plan"]] for r in rows] == [[300, 200], [300, 200]]
    plain = run(ScriptedEngine(respond), items)[0]  # without the label, the answer's first line is no step
    assert [[p["planned_words"] for p in r["plan"]] for r in plain] == [[200], [200]]


def test_missing_word_counts_use_the_default():
    def respond(request, sampling):
        return "1. Intro\n2. Body (300 words)" if not is_write(request) else "Words here."

    rows, stats = run(ScriptedEngine(respond), ITEMS[:1], cfg=conf(default_step_words=450))
    assert [p["planned_words"] for p in rows[0]["plan"]] == [450, 300]
    assert stats["defaulted_word_counts"] == 1


class NoRoomEngine(ScriptedEngine):
    """Answers 'no_room' (nothing generated) where `respond` returns no text."""

    async def complete(self, request, sampling):
        done = await super().complete(request, sampling)
        return dataclasses.replace(done, finish_reason="no_room") if not done.text else done


def test_empty_step_is_recorded_and_the_item_moves_on(tmp_path):
    base = writer(3)
    engine = NoRoomEngine(lambda r, s: "" if (r.key, step_of(r)) == ("a", 2) else base(r, s))
    rows, stats = run(engine, ITEMS[:1], checkpoint=tmp_path / "ck.jsonl")
    (row,) = rows
    assert [(p["index"], p["words"], p["finish_reason"]) for p in row["paragraphs"]] == \
        [(1, 3, "stop"), (2, 0, "no_room"), (3, 9, "stop")]
    assert row["response"] == "a wrote 1.\n\na wrote 3. a wrote 3. a wrote 3."
    assert stats["empty_steps"] == 1 and stats["steps_written"] == 2
    a3 = next(r for r in engine.requests if step_of(r) == 3)
    assert "Text written so far:\na wrote 1.\n\nThe plan" not in a3.messages[0]["content"]
    assert "Text written so far:\na wrote 1.\n" in a3.messages[0]["content"]


def test_kept_signals_of_the_responses_and_how_their_last_written_paragraph_ended():
    base = writer(3)

    class Ends(NoRoomEngine):  # item b's last paragraph hits max_tokens; item a's is empty (no_room)
        async def complete(self, request, sampling):
            done = await super().complete(request, sampling)
            hit_cap = (request.key, step_of(request)) == ("b", 3)
            return dataclasses.replace(done, finish_reason="length") if hit_cap else done

    engine = Ends(lambda r, s: "" if (r.key, step_of(r)) == ("a", 3) else base(r, s))
    rows, _ = run(engine, ITEMS[:2])
    got = kept_signals(rows)
    want = signals.aggregate([r["response"] for r in rows], ["en", "en"], ["stop", "length"])  # a ends at its 2nd
    assert {key: got[key] for key in want} == pytest.approx(want)
    assert (got["ended_eos"], got["ended_cap"], got["cap_rate"]) == (1.0, 1.0, 0.5)
    assert got["distinct_3"] < 1  # "b wrote 3." said three times
    assert signals.segment_series(got, "words") == pytest.approx(
        [sum(col) / 2 for col in zip(*([s["words"] for s in signals.signals_by_segment(r["response"], 4)]
                                       for r in rows))])


def test_all_steps_empty_gives_no_row():
    rows, stats = run(NoRoomEngine(lambda r, s: plan_text(r.key, 2) if not is_write(r) else ""), ITEMS[:1])
    assert rows == [] and stats["empty_responses"] == 1 and stats["empty_steps"] == 2


# --- plan vs. actual -------------------------------------------------------------------

def test_plan_vs_actual_and_plot(tmp_path):
    rows = [{"language": "en", "planned_words": 600, "words": 500,
             "paragraphs": [{"planned_words": 200, "words": 220}, {"planned_words": 400, "words": 280}]},
            {"language": "zh", "planned_words": 1000, "words": 1100,
             "paragraphs": [{"planned_words": 1000, "words": 1100}]}]
    summary = plan_vs_actual(rows)
    assert summary["paragraphs"] == {"n": 3, "mean_planned": 533.3, "mean_actual": 533.3, "ratio": 1.0,
                                     "median_ratio": 1.1, "within_20pct": 0.667}
    assert summary["responses"] == {"n": 2, "mean_planned": 800.0, "mean_actual": 800.0, "ratio": 1.0,
                                    "median_ratio": 0.967}
    assert plan_vs_actual([])["paragraphs"]["ratio"] is None
    out = plot_plan_vs_actual(rows, tmp_path / "plots" / "plan_vs_actual.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_counts_items_and_the_resumed_ones(tmp_path):
    from selflengthen.core import progress

    checkpoint = tmp_path / "agentwrite.jsonl"
    run(ScriptedEngine(writer(2)), ITEMS[:1], checkpoint=checkpoint)
    reporter = progress.StageProgress("extend", enabled=False)
    token = progress.activate(reporter)
    try:
        run(ScriptedEngine(writer(2)), ITEMS, checkpoint=checkpoint)
    finally:
        progress.deactivate(token)
    assert (reporter.total, reporter.done, reporter.resumed) == (3, 3, 1)
