"""Weaving constraints into queries: the verifier and the template fallback on literal
strings (English and Chinese), and constrain_all's flow on a scripted engine (pure
logic only: the scripted engine is no evidence that a model rewrites well)."""
from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selflengthen.finalize.constraints import Constraint
from selflengthen.config import schema
from selflengthen.finalize.rewrite import (TEMPLATES, constrain_all, length_demands, numbers_in,
                                           parse_rewrite, rewrite_request, strip_length_demands, template_insert,
                                           verify_rewrite)
from tests.fakes import ScriptedEngine

CONF = Path(__file__).resolve().parent.parent / "conf" / "finalize" / "default.yaml"
RANGE_EN = Constraint("range", "3000-4000 words", (3000, 4000), (3000.0, 4000.0), "en")
ABOUT_ZH = Constraint("about", "大约三千字", (3000,), (2400.0, 3600.0), "zh", True)
BELOW_EN = Constraint("below", "less than 5000 words", (5000,), (2500.0, 5000.0), "en")
RANGE_ZH = Constraint("range", "3000字至4000字", (3000, 4000), (3000.0, 4000.0), "zh")


def finalize_conf(**over):
    """conf/finalize/default.yaml with `over` on top, as the typed `finalize` settings."""
    cfg = OmegaConf.load(CONF)
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return schema.Finalize.model_validate(OmegaConf.to_container(cfg))


def test_yaml_verify_bounds_are_the_defaults():
    assert finalize_conf().rewrite.verify == schema.RewriteVerify()  # the YAML's bounds are the defaults


# --- the verifier --------------------------------------------------------------------------

Q_EN = "Write a story about a lighthouse keeper in 500 words."


@pytest.mark.parametrize("rewrite", [
    "Write a story about a lighthouse keeper in 3000-4000 words.",
    "In 3,000 to 4,000 words, write a story about a lighthouse keeper.",
    "Write a story about a lighthouse keeper; it should run between 3000 and 4000 words.",
    "Write a 3000-4000 word story about a lighthouse keeper.",
])
def test_verifier_accepts_good_english(rewrite):
    assert verify_rewrite(Q_EN, rewrite, RANGE_EN, "en") is None


@pytest.mark.parametrize("rewrite, code", [
    ("", "empty"),
    ("   ", "empty"),
    ("Sure! Write a story about a lighthouse keeper in 3000-4000 words.", "reply"),
    ("Here is the edited request: write a story about a lighthouse keeper in 3000-4000 words.", "reply"),
    ("Write a story about a lighthouse keeper.", "missing_number"),
    ("Write a story about a lighthouse keeper in 3000 words.", "missing_number"),
    ("Write a story about a lighthouse keeper in 3000-4000 words, in 500 words.", "other_length_demand"),
    ("Write a story about a lighthouse keeper in 3000-4000 words across five pages.", "other_length_demand"),
    ("Write a story about 3000 lighthouse keepers and 4000 ships.", "no_length_word"),
    ("Write 3000-4000 words.", "too_short"),
    ("Write a story about a lighthouse keeper in 3000-4000 words. " + "Make it vivid and moving. " * 10, "too_long"),
])
def test_verifier_rejects_bad_english(rewrite, code):
    reason = verify_rewrite(Q_EN, rewrite, RANGE_EN, "en")
    assert reason is not None and reason.split(":")[0] == code, reason


def test_verifier_ignores_a_cast_of_characters():
    q = "Write a story with 3 characters who meet on a train."
    assert verify_rewrite(q, "Write a story with 3 characters who meet on a train, in less than 5000 words.",
                          BELOW_EN, "en") is None


Q_ZH = "写一篇关于故乡的散文，500字左右。"


@pytest.mark.parametrize("rewrite", [
    "写一篇关于故乡的散文，大约三千字。",
    "写一篇关于故乡的散文，3000字左右。",
    "篇幅三千字上下，写一篇关于故乡的散文。",
    "请写一篇大约3,000字、关于故乡的散文。",
])
def test_verifier_accepts_good_chinese(rewrite):
    assert verify_rewrite(Q_ZH, rewrite, ABOUT_ZH, "zh") is None


@pytest.mark.parametrize("rewrite, code", [
    ("好的，写一篇关于故乡的散文，大约三千字。", "reply"),
    ("以下是修改后的请求：写一篇关于故乡的散文，大约三千字。", "reply"),
    ("写一篇关于故乡的散文，大约两千字。", "missing_number"),
    ("写一篇关于故乡的散文，500字左右。", "missing_number"),
    ("写一篇关于故乡的散文，大约三千字，分为五段。", "other_length_demand"),
    ("写一篇关于故乡的三千字散文，不少于500字。", "other_length_demand"),
    ("大约三千字。", "too_short"),
])
def test_verifier_rejects_bad_chinese(rewrite, code):
    reason = verify_rewrite(Q_ZH, rewrite, ABOUT_ZH, "zh")
    assert reason is not None and reason.split(":")[0] == code, reason


def test_numbers_and_demands():
    assert numbers_in("三千字至四千字，写于2024年", "zh") >= {3000, 4000, 2024}
    assert numbers_in("about 3,000 or 5k words", "en") >= {3000, 5000}
    assert [v for _, v in length_demands("写一个十字路口的故事，约两千字", "zh")] == [{2000}]
    assert [v for _, v in length_demands("an essay of 1,500 to 2,000 words", "en")] == [{1500, 2000}]


def test_parse_rewrite_strips_wrapping():
    assert parse_rewrite('Edited request: "Write a poem in 3000-4000 words."') == "Write a poem in 3000-4000 words."
    assert parse_rewrite("修改后的请求：「写一首诗，大约三千字。」") == "写一首诗，大约三千字。"
    assert parse_rewrite('```\nWrite "this" well.\n```') == 'Write "this" well.'


def test_rewrite_request_carries_query_and_constraint():
    [msg] = rewrite_request("Write a story {about} cats.", RANGE_EN, "en")
    assert msg["role"] == "user" and "3000-4000 words" in msg["content"]
    assert msg["content"].endswith("Write a story {about} cats.")
    [msg] = rewrite_request("写一首诗。", ABOUT_ZH, "zh")
    assert "大约三千字" in msg["content"] and msg["content"].endswith("写一首诗。") and "请求" in msg["content"]


# --- the template fallback -----------------------------------------------------------------

@pytest.mark.parametrize("query, stripped", [
    ("Write an essay on climate change in about 500 words.", "Write an essay on climate change."),
    ("Write a 1500-word story about a lighthouse keeper.", "Write a story about a lighthouse keeper."),
    ("Write an 800-word op-ed on school uniforms.", "Write an op-ed on school uniforms."),
    ("Write a five-paragraph essay about friendship.", "Write an essay about friendship."),
    ("Describe your hometown. The text should be at least 3000 words long.", "Describe your hometown."),
    ("Write a blog post (around 800 words) about remote work.", "Write a blog post about remote work."),
    ("Write a report of 10 pages on urban farming.", "Write a report on urban farming."),
    ("Your essay must not exceed 2,000 words. Discuss the causes of World War I.",
     "Discuss the causes of World War I."),
    ("Keep it under 500 words. Explain how vaccines work.", "Explain how vaccines work."),
    ("Write a guide to sourdough baking. Word count: 1500.", "Write a guide to sourdough baking."),
    ("Write a novel chapter of 2000 to 3000 words about a heist.", "Write a novel chapter about a heist."),
    ("Write a story with 3 characters who meet on a train.", "Write a story with 3 characters who meet on a train."),
])
def test_strip_english_demands(query, stripped):
    assert strip_length_demands(query, "en") == stripped


@pytest.mark.parametrize("query, stripped", [
    ("写一篇关于故乡的散文，500字左右。", "写一篇关于故乡的散文。"),
    ("请以“春天”为题写一篇文章，不少于3000字。", "请以“春天”为题写一篇文章。"),
    ("写一篇800字的议论文，讨论科技与人文。", "写一篇议论文，讨论科技与人文。"),
    ("写一篇游记。字数要求：2000字以上。", "写一篇游记。"),
    ("请写一个故事（约1000字）", "请写一个故事"),
    ("写一篇小说，字数控制在1500到2000字之间。", "写一篇小说。"),
    ("写一篇三千字的报告，分析新能源汽车市场。", "写一篇报告，分析新能源汽车市场。"),
    ("写一篇5千字的小说。", "写一篇小说。"),
    ("描写一个十字路口的清晨。", "描写一个十字路口的清晨。"),
])
def test_strip_chinese_demands(query, stripped):
    assert strip_length_demands(query, "zh") == stripped


class Pick(random.Random):
    """choice() takes the i-th option: pins the template."""

    def __init__(self, i):
        super().__init__(0)
        self.i = i

    def choice(self, seq):
        return seq[self.i]


def test_template_insertion_literal():
    q = "Write an essay on climate change in about 500 words"
    assert template_insert(q, RANGE_EN, "en", Pick(0)) == \
        "Write an essay on climate change. The piece should be 3000-4000 words long."
    assert template_insert(q, BELOW_EN, "en", Pick(4)) == \
        "Please answer in less than 5000 words. Write an essay on climate change"
    assert template_insert(Q_ZH, ABOUT_ZH, "zh", Pick(0)) == "写一篇关于故乡的散文。要求大约三千字。"
    assert template_insert("写一篇800字的议论文，讨论科技与人文", RANGE_ZH, "zh", Pick(3)) == \
        "篇幅要求：3000字至4000字。写一篇议论文，讨论科技与人文"


@pytest.mark.parametrize("language, query, constraint", [
    ("en", Q_EN, RANGE_EN), ("en", "Write a 1500-word story about a lighthouse keeper.", BELOW_EN),
    ("zh", Q_ZH, ABOUT_ZH), ("zh", "写一篇小说，字数控制在1500到2000字之间。", RANGE_ZH),
])
def test_every_template_passes_the_verifier(language, query, constraint):
    for i in range(len(TEMPLATES[language])):
        out = template_insert(query, constraint, language, Pick(i))
        assert verify_rewrite(query, out, constraint, language) is None, out


# --- constrain_all on a scripted engine ----------------------------------------------------

ROWS = [
    {"id": "good-en", "language": "en", "words": 3400, "instruction": "Write a travel guide to Lisbon in about 500 words."},
    {"id": "good-zh", "language": "zh", "words": 5200, "instruction": "写一篇关于故乡的散文，500字左右。"},
    {"id": "reply-en", "language": "en", "words": 2600, "instruction": "Write an essay about bridges."},
    {"id": "keepold-en", "language": "en", "words": 7100, "instruction": "Write a 600-word fable about a fox."},
    {"id": "same-zh", "language": "zh", "words": 4400, "instruction": "写一篇800字的议论文，讨论科技与人文。"},
    {"id": "short-en", "language": "en", "words": 900, "instruction": "Write a short poem."},
]


def scripted(first_batch: list[int]):
    def respond(request, sampling):
        if not first_batch:
            first_batch.append(len(engine.calls))
        text = request.messages[0]["content"]
        zh = "请求：" in text
        c = re.search(r"篇幅要求：(.+?)。\n" if zh else r"a text of (.+?)\.\n", text).group(1)
        q = text.split("请求：\n" if zh else "Request:\n")[-1]
        if request.key == "good-en":
            return f"Write a travel guide to Lisbon in {c}."
        if request.key == "good-zh":
            return f"写一篇关于故乡的散文，{c}。"
        if request.key == "reply-en":
            return f"Sure! Here is the request: {q} ({c})"
        if request.key == "keepold-en":
            return f"Write a 600-word fable about a fox, {c}."
        return q  # same-zh: the query unchanged, no constraint in it
    engine = ScriptedEngine(respond)
    return engine


def test_constrain_all_accepts_good_rewrites_and_falls_back_on_bad():
    first: list[int] = []
    engine = scripted(first)
    rows, stats = asyncio.run(constrain_all(engine, ROWS, finalize_conf(), seed=3, adapter="generator"))
    by = {r["id"]: r for r in rows}
    assert first == [5]  # every rewrite was in flight before the first answer came back
    assert len(engine.calls) == 5 and all(r.adapter == "generator" for r in engine.requests)
    assert len({r.seed for r in engine.requests}) == 5
    assert stats["rows"] == 6 and stats["out_of_bounds"] == 1 and stats["constrained"] == 5
    assert stats["rewritten_by_model"] == 2 and stats["template_fallback"] == 3
    assert stats["fallback_reasons"] == {"missing_number": 1, "other_length_demand": 1, "reply": 1}
    assert sum(stats["types"].values()) == 5 and stats["languages"] == {"en": 3, "zh": 2}
    assert [by[i]["rewrite"] for i in ("good-en", "good-zh", "reply-en", "keepold-en", "same-zh", "short-en")] == \
        ["model", "model", "template", "template", "template", "none"]
    for r in rows:
        if r["constraint"]:
            assert r["constraint"]["text"] in r["query"] and "500" not in r["query"] and "600" not in r["query"]
            assert verify_rewrite(r["instruction"], r["query"], Constraint(
                r["constraint"]["type"], r["constraint"]["text"], tuple(r["constraint"]["numbers"]),
                tuple(r["constraint"]["window"])), r["language"]) is None
    assert by["short-en"]["query"] == "Write a short poem." and by["short-en"]["constraint"] is None
    assert by["good-en"]["rewrite_rejection"] is None and by["reply-en"]["rewrite_rejection"].startswith("reply")
    # seeded: the same seed draws the same constraints and queries
    again, _ = asyncio.run(constrain_all(scripted([]), ROWS, finalize_conf(), seed=3))
    assert [r["query"] for r in again] == [r["query"] for r in rows]
    other, _ = asyncio.run(constrain_all(scripted([]), ROWS, finalize_conf(), seed=4))
    assert [r["constraint"] for r in other] != [r["constraint"] for r in rows]


def test_constrain_all_offline_and_dropping_unconstrained():
    rows, stats = asyncio.run(constrain_all(None, ROWS, finalize_conf(keep_unconstrained=False), seed=0))
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS[:5]]
    assert stats["template_fallback"] == 5 and stats["fallback_reasons"] == {"offline": 5}
    assert all(r["rewrite"] == "template" and r["constraint"]["text"] in r["query"] for r in rows)
