"""What an LLM judge of response quality is asked and how its answer is read (algorithm.md
3.1, 3.2): the rubrics, the chat messages that ask a judge to apply one, and a forgiving
parser of the judge's answer. Engine-free; judging.py opens the judge's engine.

- "longen" (Self-Lengthen): 7 criteria scored 1-10; quality = their mean (1..10).
- "longbench" (LongBench-Write): 6 dimensions scored 1-5; each mapped to (s - 1) * 25
  and averaged into S_q (0..100).
- "segment" (ours): one part of a long response, read after the text before it: coherence,
  substance, freshness scored 1-5, mapped to 0..100 like S_q; where a long text decays.
Each prompt (prompts/<language>/judge_<rubric>.txt) tell the judge to leave length out
of its judgement and to answer with one JSON object keyed by the dimension names.
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field

from selflengthen.core import prompting
from selflengthen.core.errors import UserError


@dataclass(frozen=True)
class Rubric:
    name: str
    template: str  # prompt file name under prompts/<language>/
    dimensions: tuple[str, ...]  # canonical keys, as the prompt names them
    low: int
    high: int
    percent: bool  # quality on 0..100: each score mapped by (s - low) * 100 / (high - low)
    aliases: dict[str, str] = field(default_factory=dict)  # other key spellings -> dimension

    def quality(self, scores: dict[str, float]) -> float:
        """The mean score over the dimensions, each first mapped to 0..100 when `percent`
        (LongBench-Write: (s - 1) * 25); otherwise on the rubric's own scale."""
        values = [scores[d] for d in self.dimensions]
        if self.percent:
            values = [(v - self.low) * (100 / (self.high - self.low)) for v in values]
        return sum(values) / len(values)


RUBRICS = {
    "longen": Rubric(
        "longen", "judge_longen",
        ("relevance", "coherence", "accuracy", "consistency", "clarity", "creativity", "engagement"), 1, 10, False,
        {"相关性": "relevance", "连贯性": "coherence", "准确性": "accuracy", "一致性": "consistency",
         "清晰度": "clarity", "清晰性": "clarity", "创造性": "creativity", "创意": "creativity",
         "创新性": "creativity", "吸引力": "engagement", "参与度": "engagement", "趣味性": "engagement"}),
    "longbench": Rubric(
        "longbench", "judge_longbench",
        ("relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience"), 1, 5, True,
        {"breadth_depth": "breadth_and_depth", "depth_and_breadth": "breadth_and_depth",
         "相关性": "relevance", "准确性": "accuracy", "连贯性": "coherence", "清晰度": "clarity",
         "清晰性": "clarity", "广度与深度": "breadth_and_depth", "广度和深度": "breadth_and_depth",
         "深度与广度": "breadth_and_depth", "阅读体验": "reading_experience"}),
    "segment": Rubric(
        "segment", "judge_segment", ("coherence", "substance", "freshness"), 1, 5, True,
        {"连贯": "coherence", "连贯性": "coherence", "充实": "substance", "充实度": "substance",
         "不重复": "freshness", "新颖": "freshness"}),
}
SEGMENT_CONTEXT_CHARS = 6000  # the text before a judged part, kept from its end


def get_rubric(name: str) -> Rubric:
    if name not in RUBRICS:
        raise UserError(f"unknown judge rubric {name!r}; choose one of {', '.join(RUBRICS)}")
    return RUBRICS[name]


def judge_messages(rubric: str, instruction: str, response: str, language: str) -> list[dict]:
    """One user turn asking the judge to rate `response` to `instruction` on the rubric,
    in the prompt language `language` ('en' or 'zh')."""
    template = prompting.load_template(language, get_rubric(rubric).template)
    return prompting.user(prompting.render(template, instruction=instruction, response=response))


def segment_messages(instruction: str, before: str, segment: str, part: int, parts: int,
                     language: str) -> list[dict]:
    """One user turn asking the judge to rate part `part` of `parts` of a response, read
    after the text before it (its last SEGMENT_CONTEXT_CHARS characters)."""
    if len(before) > SEGMENT_CONTEXT_CHARS:
        before = "..." + before[-SEGMENT_CONTEXT_CHARS:]
    template = prompting.load_template(language, get_rubric("segment").template)
    return prompting.user(prompting.render(template, instruction=instruction, before=before or "(none: the first part)",
                                           segment=segment, part=part, parts=parts))


def quality_score(rubric: str, scores: dict[str, float]) -> float:
    """The item's quality from parsed scores (see Rubric.quality)."""
    return get_rubric(rubric).quality(scores)


# --- parsing the judge's answer --------------------------------------------------------

_FENCED = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")
_NESTED_SCORE_KEYS = ("score", "rating", "value", "分数", "评分", "得分")


def _normalize_key(key: str) -> str:
    """'Breadth and Depth', 'breadth-and-depth', '2. Breadth & Depth' -> 'breadth_and_depth'."""
    key = re.sub(r"^\s*\d+\s*[.)、:]?\s*", "", str(key)).lower().replace("&", " and ")
    return "_".join(re.findall(r"\w+", key))


def _score_value(value: object) -> float | None:
    """A score as a number: 4, 4.5, "4", "4/5", "4 out of 5", "4分", {"score": 4}."""
    if isinstance(value, dict):
        inner = next((value[k] for k in value if _normalize_key(k) in _NESTED_SCORE_KEYS), None)
        return _score_value(inner)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    match = _NUMBER.match(str(value))
    return float(match.group(1)) if match else None


def _balanced_objects(text: str) -> list[str]:
    """Every outermost {...} in the text, braces inside double-quoted strings ignored."""
    found, depth, start, in_string, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start:i + 1])
    return found


def _load_object(candidate: str) -> dict | None:
    """The candidate as a dict: JSON (raw newlines allowed), JSON without trailing
    commas, a Python literal (single quotes), or JSON after swapping single quotes."""
    no_trailing_commas = re.sub(r",\s*([}\]])", r"\1", candidate)
    attempts = (
        lambda: json.loads(candidate, strict=False),
        lambda: json.loads(no_trailing_commas, strict=False),
        lambda: ast.literal_eval(no_trailing_commas),
        lambda: json.loads(no_trailing_commas.replace("'", '"'), strict=False),
    )
    for attempt in attempts:
        try:
            value = attempt()
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _dimension_values(rubric: Rubric, obj: dict) -> dict[str, object]:
    """The object's values keyed by dimension (a nested {"scores": {...}} is looked into)."""
    found: dict[str, object] = {}
    for key, value in obj.items():
        name = _normalize_key(key)
        name = rubric.aliases.get(name, name)
        if name in rubric.dimensions:
            found.setdefault(name, value)
        elif isinstance(value, dict):
            for inner_name, inner_value in _dimension_values(rubric, value).items():
                found.setdefault(inner_name, inner_value)
    return found


def _key_pattern(rubric: Rubric, dimension: str) -> str:
    spellings = [r"[\s_\-]*".join("(?:and|&)" if w == "and" else w for w in dimension.split("_"))]
    spellings += [re.escape(a) for a, d in rubric.aliases.items() if d == dimension and not a.isascii()]
    return "|".join(spellings)


def _scores_from_prose(rubric: Rubric, text: str) -> dict[str, object]:
    """Last resort for broken JSON (say, unescaped quotes in the analysis) or plain lists:
    the last `name: number` (or "name" = number) of each dimension in the text."""
    found = {}
    for dim in rubric.dimensions:
        pattern = rf"(?:{_key_pattern(rubric, dim)})[\"'*\s]*[:：=]\s*[\"'*]*\s*(\d+(?:\.\d+)?)"
        matches = re.findall(pattern, text, re.IGNORECASE)
        if matches:
            found[dim] = matches[-1]
    return found


def _checked(rubric: Rubric, values: dict[str, object]) -> dict[str, float] | None:
    scores = {dim: _score_value(values[dim]) for dim in rubric.dimensions}
    if any(s is None or not rubric.low <= s <= rubric.high for s in scores.values()):
        return None
    return scores


def parse_judgement(rubric: str, text: str) -> dict[str, float] | None:
    """The judge's scores, dimension -> float, in the rubric's order, or None when the
    answer lacks a dimension or a score is off the scale (the caller asks again, then
    records the item as unparsable).

    Accepted: a ```json fenced block or bare JSON amid any prose; single quotes and
    trailing commas; scores as numbers or strings ("4", "4/5", "4.5", "4 out of 5") or
    as {"score": 4, ...}; keys in any case, with spaces, hyphens or underscores, "&" for
    "and", numbered ("2. Accuracy"), nested under one object ({"scores": {...}}), or in
    Chinese (相关性, 广度与深度, ...); failing all JSON, "name: number" lines in prose.

    Off-scale scores are rejected, not clipped: a 7 on the 1-5 rubric means the judge
    used another scale, and clipping it to 5 would turn a misread rubric into a top
    score. Fractional scores inside the scale (4.5) are kept as they are."""
    spec = get_rubric(rubric)
    candidates = _FENCED.findall(text) + _balanced_objects(text)
    for candidate in candidates:
        obj = _load_object(candidate.strip())
        if obj is None:
            continue
        values = _dimension_values(spec, obj)
        if len(values) == len(spec.dimensions):
            return _checked(spec, values)
    values = _scores_from_prose(spec, text)
    if len(values) == len(spec.dimensions):
        return _checked(spec, values)
    return None
