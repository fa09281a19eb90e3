"""AgentWrite's prompts and plan parser (algorithm.md 2), as pure functions over the
templates prompts/<lang>/agentwrite_plan.txt and agentwrite_write.txt.

The plan prompt asks for one line per paragraph, in this format:
  en: Paragraph 1 - Main point: <point> - Word count: 400 words
  zh: 第1段 - 要点：<point> - 字数：400字
Models stray from it, so `parse_plan` reads what they actually write:
- Step lines begin with a number in any common style: "Paragraph 1", "Step 1:",
  "Part 1 -", "Section 1", "1.", "1)", "1、", "(1)", "第1段", "第一段", "段落1", under
  markdown bullets, headers and bold ("- **Paragraph 1** ..."). Steps are numbered by
  their order; the model's own numbers are ignored (they skip and repeat).
- A line that is not a step but follows a step with no blank line between (an indented
  "- Word count: 400" under "**Paragraph 1**", a wrapped point) continues that step; so
  does a line starting with a field label (Main point:, Word count:, 要点：, 字数：) after
  a blank line. Any other line is prose around the plan ("Here is the plan:", "I hope
  this helps") and is ignored; it also ends the current step. A line that opens like a
  remark ("Total:", "Note:", "以上") or states a total with a count ("共计3000字") is
  prose even right after a step.
- The word count is the labelled one ("Word count: 400", "字数：约四百字"), else the
  last "N words" / "N字" in the line; "~", "about", "约", "左右", thousands commas,
  full-width digits and Chinese numerals (四百, 一千二百) are read; a range
  ("400-500 words") counts as its mean, rounded down. Unlabelled counts under 50 are
  not counts ("a 5-word slogan", "十字路口"). No count, or a count of 0, is None: the
  chain then uses `default_step_words` from the config.
- Counts are kept as the model wrote them, not clipped to [min_words, max_words]: those
  bounds are instructions to the model, and the record shows how well it followed them.
- A plan is rejected as `empty` (no text), `no_steps` (text, but no step line with a
  point or a count) or `too_long` (more than `max_steps` steps: the paper skips plans
  over 50 lines; we count steps, so prose around the plan does not push it over).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from selflengthen.core.prompting import load_template, render, user

REJECT_REASONS = ("empty", "no_steps", "too_long")


@dataclass(frozen=True)
class PlanStep:
    index: int  # 1-based position in the plan
    point: str
    words: int | None  # the planned word count, None when the model gave none


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlanStep, ...]
    rejected: str | None = None  # one of REJECT_REASONS; a rejected plan is never written

    def with_default_words(self, words: int) -> "Plan":
        """The plan with every missing word count set to `words`."""
        return replace(self, steps=tuple(s if s.words is not None else replace(s, words=words) for s in self.steps))


# --- numbers ---------------------------------------------------------------------------

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}


def number_value(text: str) -> int | None:
    """'1,200' -> 1200, '４００' -> 400, '四百' -> 400, '一千二百' -> 1200, '两万' -> 20000."""
    text = text.replace(",", "").replace("，", "")
    if text.isdigit():
        return int(text)
    total = section = 0
    digit = None
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[ch]
            digit = None
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


_NUM = r"(?:\d{1,3}(?:[,，]\d{3})+|\d+|[零〇一二两三四五六七八九十百千万]+)"
_APPROX = r"(?:(?:~|～|≈|about|approx(?:imately|\.)?|around|roughly|大约|大概|约)\s*)?"
_RANGE = rf"(?:\s*(?:-|－|–|—|~|～|to|至|到)\s*(?P<hi>{_NUM}))?"
_UNIT = r"(?:words?\b|个?字)"
_LABELLED_COUNT = re.compile(
    rf"(?:(?:word\s*count|number\s+of\s+words|字数)\s*[:：]?|(?:words?|length|篇幅|长度)\s*[:：])\s*"
    rf"{_APPROX}(?P<lo>{_NUM}){_RANGE}\s*{_UNIT}?\s*(?:左右)?", re.I)
_BARE_COUNT = re.compile(rf"{_APPROX}(?P<lo>{_NUM}){_RANGE}\s*{_UNIT}\s*(?:左右)?", re.I)
_MIN_BARE_COUNT = 50


def _count(match: re.Match) -> int | None:
    lo = number_value(match.group("lo"))
    hi = number_value(match.group("hi")) if match.group("hi") else None
    if lo is None:
        return None
    return (lo + hi) // 2 if hi is not None and hi >= lo else lo


def _take_count(body: str) -> tuple[int | None, str]:
    """(the step's word count, the body without it)."""
    labelled = _LABELLED_COUNT.search(body)
    if labelled:
        found = labelled
    else:
        bare = [m for m in _BARE_COUNT.finditer(body) if (_count(m) or 0) >= _MIN_BARE_COUNT]
        found = bare[-1] if bare else None
    if found is None:
        return None, body
    words = _count(found)
    rest = body[: found.start()] + " " + body[found.end():]
    rest = re.sub(r"[(（\[【]\s*[)）\]】]", " ", rest)  # the brackets that held "(400 words)"
    return (words if words else None), rest


# --- step lines ------------------------------------------------------------------------

_DECOR = re.compile(r"^(?:\s*(?:#+|>+|[-*+•·●▪]))*\s*")
_CN_ORD = r"[零〇一二两三四五六七八九十百]+"
_STEP = re.compile(
    rf"(?:paragraph|para\.?|step|part|section|segment|段落)\s*(?:\d+|{_CN_ORD})(?!\d)"
    rf"|第\s*(?:\d+|{_CN_ORD})\s*(?:个段落|段落?|部分|步|节|章|点)?"
    r"|[(（\[【]\s*\d+\s*[)）\]】]"
    r"|\d{1,3}\s*(?:[.．)、）:：](?!\d)|\s+[-－–—])",
    re.I)
_POINT_LABEL = re.compile(
    r"(?:main\s*points?|key\s*points?|points?|content|topic|focus|summary|description"
    r"|要点|主要内容|内容|主旨|主题)\s*[:：]", re.I)
_FIELD_LINE = re.compile(rf"(?:{_POINT_LABEL.pattern}|{_LABELLED_COUNT.pattern})", re.I)
_PROSE_START = re.compile(r"(?:total|in\s+total|overall|altogether|note\b|以上|上述|总字数|总计|合计|共计|全文|注[:：])",
                          re.I)
_TOTAL = re.compile(r"total|altogether|in\s+all|总字数|总计|合计|共计|全文", re.I)
_EDGE = "\t -－–—―:：|｜,，、;；"


def _is_prose(line: str) -> bool:
    """A line after the plan: it opens like a remark, or states a total with a count."""
    return bool(_PROSE_START.match(line) or (_TOTAL.search(line) and _BARE_COUNT.search(line)))


def _clean(line: str) -> str:
    return _DECOR.sub("", line.replace("**", "").replace("__", "")).strip()


def _step_from(index: int, parts: list[str]) -> PlanStep | None:
    words, body = _take_count(" ".join(parts))
    label = _POINT_LABEL.search(body)
    if label:
        body = body[: label.start()] + " " + body[label.end():]
    point = re.sub(r"\s+", " ", body).lstrip(_EDGE + ".．").rstrip(_EDGE)
    point = re.sub(r"\s+[-－–—|｜]\s+(?=[-－–—|｜])", " ", point)
    if not point and words is None:
        return None
    return PlanStep(index, point, words)


def parse_plan(text: str, language: str, *, max_steps: int = 50) -> Plan:
    """The model's plan as steps (see the module docstring for what is read and why).
    `language` is accepted for symmetry: the labels of both languages are read in either,
    since a model asked in Chinese sometimes answers in English and the other way round."""
    del language
    if not text or not text.strip():
        return Plan((), "empty")
    groups: list[list[str]] = []
    current: list[str] | None = None
    current_indent = 0
    after_blank = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            after_blank = True
            continue
        indent = len(raw.expandtabs(4)) - len(raw.expandtabs(4).lstrip())
        line = _clean(raw)
        step = _STEP.match(line) if line else None
        nested = current is not None and not after_blank and indent > current_indent
        if step and not nested:
            current, current_indent = [line[step.end():]], indent
            groups.append(current)
        elif current is not None and line and not _is_prose(line) \
                and (not after_blank or _FIELD_LINE.match(line)):
            current.append(line)
        else:
            current = None  # prose around the plan
        after_blank = False
    steps = [s for s in (_step_from(0, g) for g in groups) if s is not None]
    steps = tuple(replace(s, index=i) for i, s in enumerate(steps, 1))
    if not steps:
        return Plan((), "no_steps")
    if len(steps) > max_steps:
        return Plan(steps, "too_long")
    return Plan(steps)


# --- prompts ---------------------------------------------------------------------------

_NOTHING_YET = {"en": "(nothing yet: this is the first paragraph)", "zh": "（还没有，这是第一段）"}
_LEFT_OUT = {"en": "[... the beginning is left out here ...]", "zh": "[……前文从略……]"}


def format_step(step: PlanStep, language: str) -> str:
    """A step in the plan line format; the count part is left out when there is none."""
    if language == "zh":
        line = f"第{step.index}段 - 要点：{step.point}"
        return line + (f" - 字数：{step.words}字" if step.words is not None else "")
    line = f"Paragraph {step.index} - Main point: {step.point}"
    return line + (f" - Word count: {step.words} words" if step.words is not None else "")


def plan_request(instruction: str, language: str, *, min_words: int, max_words: int) -> list[dict]:
    return user(render(load_template(language, "agentwrite_plan"), instruction=instruction,
                      min_words=min_words, max_words=max_words))


def tail_within(written: str, max_chars: int | None, language: str) -> str:
    """The text so far, or when it is over `max_chars`, its last blank-line paragraphs
    that fit (the last one cut from the left if it alone is too long) after a note."""
    if max_chars is None or len(written) <= max_chars:
        return written
    kept: list[str] = []
    size = 0
    for part in reversed(written.split("\n\n")):
        if size + len(part) + 2 > max_chars:
            break
        kept.append(part)
        size += len(part) + 2
    tail = "\n\n".join(reversed(kept)) if kept else written[-max_chars:]
    return _LEFT_OUT[language] + "\n\n" + tail


def write_request(instruction: str, plan: Plan, written_so_far: str, step: PlanStep, language: str, *,
                  max_written_chars: int | None = None) -> list[dict]:
    """The request for one step: the instruction, the whole plan, the text so far (its
    tail when over `max_written_chars`) and the current plan line."""
    written = tail_within(written_so_far.strip(), max_written_chars, language) or _NOTHING_YET[language]
    return user(render(load_template(language, "agentwrite_write"), instruction=instruction,
                      plan="\n".join(format_step(s, language) for s in plan.steps),
                      written=written, step=format_step(step, language)))
