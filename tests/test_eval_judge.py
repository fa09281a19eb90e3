"""The quality judges: prompts in both languages for both rubrics, the parser on many
literal messy judge answers, and the quality scores."""
from __future__ import annotations

import pytest

from selflengthen.core.errors import UserError
from selflengthen.evaluation.rubrics import RUBRICS, judge_messages, parse_judgement, quality_score

LONGBENCH = {"relevance": 4.0, "accuracy": 5.0, "coherence": 3.0, "clarity": 4.0, "breadth_and_depth": 2.0,
             "reading_experience": 4.0}
LONGEN = {"relevance": 8.0, "coherence": 7.0, "accuracy": 9.0, "consistency": 8.0, "clarity": 6.0,
          "creativity": 5.0, "engagement": 7.0}


@pytest.mark.parametrize("rubric", ["longen", "longbench"])
@pytest.mark.parametrize("language, length_rule", [("en", "Length must not affect"), ("zh", "篇幅不得影响")])
def test_judge_messages(rubric, language, length_rule):
    instruction = "Write a {fable} about 3000 words."
    messages = judge_messages(rubric, instruction, "Once upon a time {response}.", language)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert instruction in content and "Once upon a time {response}." in content  # user braces survive
    assert length_rule in content and "JSON" in content
    for dim in RUBRICS[rubric].dimensions:
        assert f'"{dim}"' in content
    scale = "<1-10>" if rubric == "longen" else "<1-5>"
    assert scale in content


def test_unknown_rubric():
    with pytest.raises(UserError, match="choose one of"):
        judge_messages("likert", "i", "r", "en")


LONGBENCH_ANSWERS = [
    # bare JSON, as asked
    '{"analysis": "Solid.", "relevance": 4, "accuracy": 5, "coherence": 3, "clarity": 4, '
    '"breadth_and_depth": 2, "reading_experience": 4}',
    # fenced block with prose around it
    'Here is my evaluation:\n```json\n{"analysis": "Solid.", "relevance": 4, "accuracy": 5, "coherence": 3,\n'
    '"clarity": 4, "breadth_and_depth": 2, "reading_experience": 4}\n```\nLet me know if you need more.',
    # fence without a language tag, the reference's key spellings
    '```\n{"Analysis": "ok", "Relevance": 4, "Accuracy": 5, "Coherence": 3, "Clarity": 4, '
    '"Breadth and Depth": 2, "Reading Experience": 4}\n```',
    # single quotes, scores as strings in several shapes, trailing comma
    "{'analysis': 'fine', 'relevance': '4', 'accuracy': '5/5', 'coherence': '3 out of 5', 'clarity': 4.0, "
    "'breadth & depth': '2', 'reading-experience': ' 4 ',}",
    # keys in mixed case and numbered, scores nested as objects
    '{"1. RELEVANCE": {"score": 4, "reason": "on topic"}, "2. Accuracy": {"score": "5"}, "3. coherence": 3, '
    '"4. Clarity": 4, "5. Breadth_And_Depth": 2, "6. Reading_Experience": 4}',
    # all under a "scores" object
    '{"analysis": "x", "scores": {"relevance": 4, "accuracy": 5, "coherence": 3, "clarity": 4, '
    '"breadth_and_depth": 2, "reading_experience": 4}}',
    # Chinese keys
    '评价如下：{"分析": "内容扎实", "相关性": 4, "准确性": 5, "连贯性": 3, "清晰度": 4, '
    '"广度与深度": 2, "阅读体验": 4}',
    # broken JSON (unescaped quotes in the analysis): the scores are read from the text
    '{"analysis": "The "story" drags.", "relevance": 4, "accuracy": 5, "coherence": 3, "clarity": 4, '
    '"breadth_and_depth": 2, "reading_experience": 4}',
    # no JSON at all, a markdown list
    "**Relevance**: 4\n**Accuracy**: 5\n**Coherence**: 3\n**Clarity**: 4\n**Breadth and Depth**: 2\n"
    "**Reading Experience**: 4",
    # raw newline inside a string, braces inside the analysis, an earlier non-JSON brace
    'Scores {see below}:\n{"analysis": "Uses {placeholders}\nwell.", "relevance": 4, "accuracy": 5, '
    '"coherence": 3, "clarity": 4, "breadth_and_depth": 2, "reading_experience": 4}',
    # a fractional score is kept, the echoed template before the answer is skipped
    '{"relevance": <1-5>}\n{"relevance": 4, "accuracy": 5, "coherence": 3, "clarity": 4, '
    '"breadth_and_depth": 2, "reading_experience": 4, "overall": 9}',
]


@pytest.mark.parametrize("answer", LONGBENCH_ANSWERS)
def test_parse_messy_longbench_answers(answer):
    assert parse_judgement("longbench", answer) == LONGBENCH


def test_parse_fractional_and_scale_ranges():
    half = '{"relevance": 4.5, "accuracy": "4.5", "coherence": 1, "clarity": 5, "breadth_and_depth": 5, ' \
           '"reading_experience": 1}'
    assert parse_judgement("longbench", half)["relevance"] == 4.5
    assert parse_judgement("longbench", half)["accuracy"] == 4.5


@pytest.mark.parametrize("answer", [
    "",
    "I cannot evaluate this response.",
    # a dimension missing
    '{"relevance": 4, "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2}',
    # off the 1-5 scale: rejected, not clipped
    '{"relevance": 7, "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2, "reading_experience": 4}',
    '{"relevance": 0, "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2, "reading_experience": 4}',
    # a score that is no number
    '{"relevance": "high", "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2, '
    '"reading_experience": 4}',
    '{"relevance": true, "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2, '
    '"reading_experience": 4}',
    '{"relevance": null, "accuracy": 5, "coherence": 3, "clarity": 4, "breadth_and_depth": 2, '
    '"reading_experience": 4}',
])
def test_unusable_longbench_answers_give_none(answer):
    assert parse_judgement("longbench", answer) is None


@pytest.mark.parametrize("answer", [
    '{"analysis": "Vivid.", "relevance": 8, "coherence": 7, "accuracy": 9, "consistency": 8, "clarity": 6, '
    '"creativity": 5, "engagement": 7}',
    "```json\n{\"Analysis\": \"Vivid.\", \"Relevance\": 8, \"Coherence\": 7, \"Accuracy\": 9, \"Consistency\": 8, "
    "\"Clarity\": 6, \"Creativity\": 5, \"Engagement\": 7}\n```",
    "{'Relevance': '8/10', 'Coherence': '7', 'Accuracy': 9, 'Consistency': 8.0, 'Clarity': 6, 'Creativity': 5, "
    "'Engagement': 7}",
    '{"相关性": 8, "连贯性": 7, "准确性": 9, "一致性": 8, "清晰度": 6, "创造性": 5, "吸引力": 7}',
    "Relevance: 8\nCoherence: 7\nAccuracy: 9\nConsistency: 8\nClarity: 6\nCreativity: 5\nEngagement: 7",
])
def test_parse_longen_answers(answer):
    assert parse_judgement("longen", answer) == LONGEN


def test_longen_scale_is_one_to_ten():
    ten = dict.fromkeys(RUBRICS["longen"].dimensions, 10)
    assert parse_judgement("longen", str(ten).replace("'", '"')) == dict.fromkeys(ten, 10.0)
    assert parse_judgement("longen", str({**ten, "clarity": 11})) is None
    # a LongBench answer lacks LonGen's criteria
    assert parse_judgement("longen", LONGBENCH_ANSWERS[0]) is None


def test_quality_scores():
    assert quality_score("longen", LONGEN) == pytest.approx(50 / 7)
    # LongBench: mean of (s - 1) * 25 = (75 + 100 + 50 + 75 + 25 + 75) / 6
    assert quality_score("longbench", LONGBENCH) == pytest.approx(400 / 6)
    assert quality_score("longbench", dict.fromkeys(LONGBENCH, 5)) == 100.0
    assert quality_score("longbench", dict.fromkeys(LONGBENCH, 1)) == 0.0
    assert quality_score("longen", dict.fromkeys(LONGEN, 1)) == 1.0
