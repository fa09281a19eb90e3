"""Length constraints for the final training set (algorithm.md 4): from a response's
word count, draw one seeded constraint -- "around 3000 words", "3000-4000 words",
"more than 3000 words", "less than 4000 words" or their Chinese forms -- built from the
response's own length, with the window LonGen scores it by (algorithm.md 3.1).

Parameters come from conf/finalize/default.yaml (`constraints:`), the paper's values by
default: responses of 2,000 (inclusive) to 8,000 (exclusive) words, like the reference
script; rounding unit 2,000 with p 0.2, else 1,000; about 0.4, range 0.25, above 0.1,
below 0.25; Chinese numerals in half of the Chinese constraints.

Decisions where the reference leaves a gap or errs:
- "above" is *more than* low and "below" is *less than* high in both languages (the
  reference's Chinese list swaps them).
- round = the nearest multiple of the unit, ties upwards (the reference's Python round()
  sends 2500 to 2000 and 3500 to 4000); round, low and high are clipped to
  [min_words, max_words].
- Exact multiples: floor and ceil coincide with the length itself (the reference would
  write "4000-4000 words" and "less than 4000 words" for a 4000-word response). There we
  take high = low + one unit (clipped): "4000-5000 words", "less than 5000 words", and
  "more than 4000 words", whose LonGen window [4000, 6000] holds the response. So always
  low <= words < high, and low < high: the lower bound is inclusive, the upper strict,
  like the word bounds [min_words, max_words) themselves.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from selflengthen.config import schema

TYPES = ("about", "range", "above", "below")

# One form per type and language; {a}/{b} are the numbers (already formatted).
FORMS = {
    "en": {"about": "around {a} words", "range": "{a}-{b} words", "above": "more than {a} words",
           "below": "less than {a} words"},
    "zh": {"about": "大约{a}字", "range": "{a}字至{b}字", "above": "大于{a}字", "below": "小于{a}字"},
}


@dataclass(frozen=True)
class ConstraintConfig:
    """conf/finalize/default.yaml `constraints:` as a typed value."""

    min_words: int = 2000
    max_words: int = 8000
    units: tuple[int, ...] = (2000, 1000)
    unit_probs: tuple[float, ...] = (0.2, 0.8)
    type_probs: dict = field(default_factory=lambda: {"about": 0.4, "range": 0.25, "above": 0.1, "below": 0.25})
    zh_numeral_prob: float = 0.5

    @classmethod
    def of(cls, settings: schema.Constraints) -> "ConstraintConfig":
        """From the typed `finalize.constraints` settings (their sums checked there)."""
        return cls(min_words=settings.min_words, max_words=settings.max_words,
                   units=tuple(u.words for u in settings.units), unit_probs=tuple(u.prob for u in settings.units),
                   type_probs={t: getattr(settings.type_probs, t) for t in TYPES},
                   zh_numeral_prob=settings.zh_numeral_prob)

    def in_bounds(self, words: int) -> bool:
        return self.min_words <= words < self.max_words


@dataclass(frozen=True)
class Constraint:
    """One length requirement: its type, its text as the query will carry it, the numbers
    it names (one; two for a range) and the window of lengths that satisfy it (LonGen)."""

    type: str
    text: str
    numbers: tuple[int, ...]
    window: tuple[float, float]
    language: str = "en"
    chinese_numerals: bool = False
    unit: int = 0  # the rounding unit drawn

    def as_row(self) -> dict:
        return {"type": self.type, "text": self.text, "numbers": list(self.numbers), "window": list(self.window),
                "unit": self.unit, "chinese_numerals": self.chinese_numerals}


def window(kind: str, numbers: tuple[int, ...]) -> tuple[float, float]:
    """LonGen's scoring window (algorithm.md 3.1)."""
    n = numbers[0]
    return {"about": (0.8 * n, 1.2 * n), "range": (float(numbers[0]), float(numbers[-1])),
            "above": (float(n), 1.5 * n), "below": (0.5 * n, float(n))}[kind]


def rounded(words: int, unit: int, lo: int, hi: int) -> tuple[int, int, int]:
    """(round, low, high) for a length and a unit, clipped to [lo, hi]; for an exact
    multiple high is one unit above low, so that low < high (see the module docstring)."""
    clip = lambda x: min(max(x, lo), hi)  # noqa: E731
    near = math.floor(words / unit + 0.5) * unit
    floor, ceil = (words // unit) * unit, -(-words // unit) * unit
    if floor == ceil:
        ceil = floor + unit
    return clip(near), clip(floor), clip(ceil)


def _pick(rng: random.Random, options, probs) -> object:
    u, acc = rng.random(), 0.0
    for option, p in zip(options, probs):
        acc += p
        if u < acc:
            return option
    return options[-1]


def draw_constraint(words: int, language: str, rng: random.Random, cfg: ConstraintConfig) -> Constraint:
    """One seeded constraint for a response of `words` words (caller checks the bounds).
    Draw order: unit, Chinese numerals (Chinese only), type."""
    unit = _pick(rng, cfg.units, cfg.unit_probs)
    near, low, high = rounded(words, unit, cfg.min_words, cfg.max_words)
    numerals = language == "zh" and rng.random() < cfg.zh_numeral_prob
    kind = _pick(rng, TYPES, [cfg.type_probs[t] for t in TYPES])
    numbers = {"about": (near,), "range": (low, high), "above": (low,), "below": (high,)}[kind]
    fmt = to_chinese_numeral if numerals else str
    forms = FORMS["zh" if language == "zh" else "en"]
    text = forms[kind].format(a=fmt(numbers[0]), b=fmt(numbers[-1]))
    return Constraint(kind, text, numbers, window(kind, numbers), language, numerals, unit)


# --- Chinese numerals -------------------------------------------------------------------

DIGITS = "零一二三四五六七八九"
_SMALL_UNITS = ("", "十", "百", "千")
_BIG_UNITS = ("", "万", "亿")


def _section(n: int, leading: bool) -> str:
    """0 < n < 10000 in Chinese; 两 for a 2 at 千 or a leading 百; inner zeros as one 零."""
    digits = [int(c) for c in f"{n:04d}"]  # 千 百 十 个
    out, zero = [], False
    started = False
    for i, d in enumerate(digits):
        place = 3 - i
        if d == 0:
            zero = started
            continue
        if zero:
            out.append("零")
            zero = False
        if d == 2 and (place == 3 or (place == 2 and not started and leading)):
            out.append("两")
        elif d == 1 and place == 1 and not started and leading:
            pass  # 十五, not 一十五, at the very start of the number
        else:
            out.append(DIGITS[d])
        out.append(_SMALL_UNITS[place])
        started = True
    return "".join(out)


def to_chinese_numeral(n: int) -> str:
    """Integers 0 .. 10^12-1 in natural Chinese: 2000 -> 两千, 3500 -> 三千五百,
    10000 -> 一万, 12000 -> 一万两千, 20000 -> 两万, 1005 -> 一千零五, 15 -> 十五."""
    if not 0 <= n < 10**12:
        raise ValueError(f"to_chinese_numeral: {n} is out of range [0, 10^12)")
    if n == 0:
        return "零"
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out = []
    for idx in range(len(groups) - 1, -1, -1):
        g = groups[idx]
        leading = idx == len(groups) - 1
        if g == 0:
            continue
        if not leading and (g < 1000 or groups[idx + 1] == 0) and out and not out[-1].endswith("零"):
            out.append("零")
        text = _section(g, leading)
        if leading and g == 2 and idx > 0:
            text = "两"  # 两万, 两亿; a bare 2 stays 二
        out.append(text + _BIG_UNITS[idx])
    return "".join(out)


_CN_VALUE = {c: i for i, c in enumerate(DIGITS)} | {"两": 2, "〇": 0}
_CN_SMALL = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10**4, "亿": 10**8}


def from_chinese_numeral(text: str) -> int | None:
    """The value of a Chinese numeral (二千 and 两千 alike), or None if it is not one."""
    if not text or any(c not in _CN_VALUE and c not in _CN_SMALL and c not in _CN_BIG for c in text):
        return None
    if text[0] not in _CN_VALUE and text[0] != "十":  # 千万 ("by all means"), 百 alone: words, not numbers
        return None
    total, section, digit = 0, 0, None
    for c in text:
        if c in _CN_VALUE:
            digit = _CN_VALUE[c] if digit is None or digit == 0 else digit * 10 + _CN_VALUE[c]
        elif c in _CN_SMALL:
            section += (1 if digit is None else digit) * _CN_SMALL[c]
            digit = None
        else:
            section += digit or 0
            total = (total + section) * _CN_BIG[c] if _CN_BIG[c] > 10**4 else total + section * _CN_BIG[c]
            section, digit = 0, None
    return total + section + (digit or 0)
