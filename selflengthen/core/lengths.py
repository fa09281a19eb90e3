"""Length requirements written in words: LonGen's constraint parser (about / range / above /
below, English and Chinese, Arabic or Chinese numerals; moved here from evaluation/benchmarks.py
so the RL rewards in core/rewards.py read the same windows the evaluation scores by), and the
search for such a requirement inside a whole prompt ("... in about 50 words.", "写一篇大约3000字的
文章", "between 300 and 400 words")."""
from __future__ import annotations

import re

LONGEN_KINDS = ("about", "range", "above", "below")

_ZH_DIGITS = dict(zip("零〇一二两三四五六七八九", (0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True))
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_NUMBER = re.compile(
    r"(?P<arabic>\d+(?:[,，]\d{3}(?!\d))*(?:\.\d+)?)\s*(?P<mult>[kK](?![A-Za-z])|千|万)?"
    r"|(?P<zh>[零〇一二两三四五六七八九十百千万]+)"
)
# Wording of each kind, negated forms first ("不超过" holds "超过", "no more than" holds "more than").
_KIND_WORDS = (
    ("below", "no more than|not more than|not exceed|no longer than|at most|up to|maximum of|不超过|不多于|不高于"),
    ("above", "no less than|not less than|no fewer than|at least|minimum of|不少于|不低于|不小于"),
    ("below", "less than|fewer than|under|below|shorter than|within|小于|少于|低于|至多|最多|以内|以下|不到"),
    ("above", "more than|over|above|exceed|exceeds|exceeding|longer than|大于|多于|超过|至少|以上"),
    ("about", "around|about|approximately|roughly|nearly|close to|circa|大约|大概|约|左右|上下"),
)
_KIND_PATTERNS = tuple(
    (kind, re.compile("|".join(rf"\b{w}\b" if w.isascii() else w for w in words.split("|"))))
    for kind, words in _KIND_WORDS
)
# What may stand between the two lengths of a range, once units are dropped.
_RANGE_JOINER = re.compile(r"(?:-|–|—|~|～|至|到|to|and)", re.IGNORECASE)
_UNIT_WORDS = re.compile(r"个字|字|词|words?|\s", re.IGNORECASE)


def chinese_numeral(text: str) -> int:
    """The value of a Chinese numeral: 三千 -> 3000, 两千五 -> 2500, 一万五千 -> 15000,
    三千零五 -> 3005, 十五 -> 15."""
    total = section = digit = 0
    last_unit, zero_seen = 0, False
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
            zero_seen = zero_seen or digit == 0
        elif ch == "万":
            total += (section + digit) * 10000
            section = digit = 0
            last_unit = 10000
        else:
            unit = _ZH_UNITS[ch]
            section += (digit or 1) * unit
            digit, last_unit, zero_seen = 0, unit, False
    if digit and last_unit >= 100 and not zero_seen:  # colloquial 两千五 = 2500
        digit *= last_unit // 10
    return total + section + digit


def _numbers(constraint: str) -> list[tuple[float, int, int]]:
    """(value, start, end) of every length in the constraint, in order."""
    out = []
    for m in _NUMBER.finditer(constraint):
        if m["arabic"]:
            value = float(m["arabic"].replace(",", "").replace("，", ""))
            value *= {"k": 1000, "K": 1000, "千": 1000, "万": 10000}.get(m["mult"] or "", 1)
        else:
            zh = m["zh"]
            if not (set(zh) & set(_ZH_UNITS) or constraint[m.end():m.end() + 1] in ("字", "词")):
                continue
            value = float(chinese_numeral(zh))
        out.append((value, m.start(), m.end()))
    return out


def constraint_numbers(constraint: str) -> list[float]:
    """Every length in the constraint, in order: 5000, 5,000, 5k, 1.5万, 三千 (a lone
    Chinese numeral counts only with a unit in it or 字/词 right after it)."""
    return [value for value, _, _ in _numbers(constraint)]


def constraint_kind(constraint: str) -> str | None:
    """The kind the wording says (about, range, above, below), or None when it says none.
    A range is two lengths joined by -, ~, to, and, 至 or 到 (units aside), or "between"/之间."""
    numbers = _numbers(constraint)
    if len(numbers) >= 2:
        between = _UNIT_WORDS.sub("", constraint[numbers[0][2]:numbers[1][1]])
        if _RANGE_JOINER.fullmatch(between) or "between" in constraint.lower() or "之间" in constraint:
            return "range"
    lowered = constraint.lower()
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(lowered):
            return kind
    return None


def constraint_window(constraint: str, kind: str | None = None) -> tuple[float, float]:
    """The LonGen window (lo, hi) in words: about L -> [0.8L, 1.2L]; range a-b -> [a, b];
    above L -> [L, 1.5L]; below L -> [0.5L, L]. `kind` (the item's `type`) wins over the
    wording; without it the wording decides, and a bare length ("3000 words") is "about".
    The products are computed as the reference does (L * 0.8, ...), so windows match it
    bit for bit; a reversed range is put in order. Raises ValueError when unreadable."""
    kind = kind or constraint_kind(constraint) or "about"
    if kind not in LONGEN_KINDS:
        raise ValueError(f"kind {kind!r} is none of {', '.join(LONGEN_KINDS)}")
    numbers = constraint_numbers(constraint)
    if not numbers or (kind == "range" and len(numbers) < 2):
        raise ValueError(f"no {'two lengths' if kind == 'range' else 'length'} in constraint {constraint!r}")
    return window_of(kind, numbers)


def window_of(kind: str, numbers: list[float]) -> tuple[float, float]:
    """LonGen's window for a kind and its lengths (two for a range, the first otherwise)."""
    length = numbers[0]
    if kind == "about":
        return length * 0.8, length * 1.2
    if kind == "range":
        return min(numbers[:2]), max(numbers[:2])
    if kind == "above":
        return length, length * 1.5
    return length * 0.5, length


# --- a requirement inside a whole prompt ------------------------------------------------

# A unit right after a length: "300 words", "a 300-word essay", "3000字", "五百个字", "200词".
_UNIT_AFTER = re.compile(r"\s*-?\s*(?:words?\b|个字|字|词)", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.!?。！？;；\n]")
_TAIL_KIND = (("above", re.compile(r"^\s*(?:or|and)\s+(?:more|longer|above)\b", re.IGNORECASE)),
              ("below", re.compile(r"^\s*(?:or|and)\s+(?:less|fewer|shorter|under)\b", re.IGNORECASE)))
_HEAD_CHARS, _TAIL_CHARS = 40, 12
PROMPT_FORMS = ("a length in the prompt with its unit ('in about 300 words', '300-400 words', 'more than 300 "
                "words', 'a 500-word essay', '大约3000字', '3000字至4000字')")


def _kind_in(text: str) -> str | None:
    lowered = text.lower()
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(lowered):
            return kind
    return None


def prompt_window(prompt: str) -> tuple[float, float] | None:
    """The LonGen window of the first length requirement a prompt states, or None when it
    states none. A requirement is a length followed by its unit (words / 字 / 词); a length
    just before it joined by -, ~, to, and, 至, 到 makes a range. The kind is read from the
    words of the same clause before the length ("in about", "more than", "不超过") or right
    after its unit ("or more", "左右", "以上"); a bare length is "about", as in LonGen."""
    numbers = _numbers(prompt)
    for i, (value, start, end) in enumerate(numbers):
        unit = _UNIT_AFTER.match(prompt, end)
        if not unit:
            continue
        pairs = [numbers[j:j + 2] for j in (i - 1, i) if j >= 0 and j + 1 < len(numbers)]
        for (a, _, a_end), (b, b_start, _) in pairs:  # "300-400 words", "3000字至4000字"
            if _RANGE_JOINER.fullmatch(_UNIT_WORDS.sub("", prompt[a_end:b_start])):
                return window_of("range", [a, b])
        head = _CLAUSE_END.split(prompt[max(0, start - _HEAD_CHARS):start])[-1]
        tail = prompt[unit.end():unit.end() + _TAIL_CHARS]
        kind = next((k for k, pattern in _TAIL_KIND if pattern.search(tail)), None)
        kind = kind or _kind_in(tail[:2]) or _kind_in(head) or "about"
        return window_of(kind, [value])
    return None


