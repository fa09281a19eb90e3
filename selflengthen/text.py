"""Text utilities shared by every stage: word counts, paragraph splits, language
detection and the response quality check (algorithm.md 1.5, 1.7)."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Self-Lengthen counts every CJK ideograph, CJK punctuation and full-width form as a word.
_CJK_WORD = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
_CJK_IDEOGRAPH = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"\b[a-zA-Z]+\b")
_BLANK_LINES = re.compile(r"\n\s*\n")


def count_words(text: str) -> int:
    """Self-Lengthen's counter: one word per CJK character, plus whitespace tokens."""
    cjk = len(_CJK_WORD.findall(text))
    rest = _CJK_WORD.sub(" ", text).split()
    return cjk + len(rest)


def count_words_longwriter(text: str) -> int:
    """LongWriter's counter (LongBench-Write, LongWrite-Ruler): ideographs + latin words."""
    return len(_CJK_IDEOGRAPH.findall(text)) + len(_LATIN_WORD.findall(text))


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs make up a noticeable share of the letters, else 'en'."""
    ideographs = len(_CJK_IDEOGRAPH.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return "zh" if ideographs and ideographs * 4 >= latin else "en"


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs on blank lines; when that gives 2 parts or fewer, on single newlines."""
    parts = [p.strip() for p in _BLANK_LINES.split(text.strip()) if p.strip()]
    if len(parts) <= 2:
        lines = [p.strip() for p in text.strip().split("\n") if p.strip()]
        if len(lines) > len(parts):
            parts = lines
    return parts


def first_half(text: str) -> tuple[str, int, int]:
    """The first floor(n/2) paragraphs joined by blank lines, with (taken, n)."""
    parts = split_paragraphs(text)
    taken = len(parts) // 2
    return "\n\n".join(parts[:taken]), taken, len(parts)


def keep_leading_two_thirds(text: str) -> str:
    """The first floor(2m/3) of m paragraphs: the tail of an expansion tends to conclude."""
    parts = split_paragraphs(text)
    return "\n\n".join(parts[: (2 * len(parts)) // 3])


def keep_lines(text: str, keep_prob: float, rng) -> list[str]:
    """The non-blank lines of text, each kept with probability keep_prob (never none)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    return [ln for ln in lines if rng.random() < keep_prob] or lines[:1]


def ngram_units(text: str, language: str) -> list[str]:
    """Units for the repetition check: whitespace tokens (en); ASCII runs and single
    characters (zh), whitespace dropped."""
    if language == "zh":
        return re.findall(r"[\x21-\x7e]+|[^\x00-\x7f\s]", text)
    return text.split()


def has_repeated_ngram(units: list[str], n: int) -> bool:
    seen: set[tuple[str, ...]] = set()
    for i in range(len(units) - n + 1):
        gram = tuple(units[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


@dataclass(frozen=True)
class QualityRules:
    """One language's variant of the quality check; values come from conf/."""

    terminal_marks: tuple[str, ...]
    ngram: int
    meta_words: tuple[str, ...] = ()
    meta_head_lines: int = 2
    meta_tail_lines: int = 3


def quality_problem(text: str, rules: QualityRules, language: str) -> str | None:
    """Why a response fails the quality check ('unterminated', 'repetition',
    'meta_words', 'empty'), or None when it passes."""
    body = text.rstrip()
    if not body.strip():
        return "empty"
    if not body.endswith(rules.terminal_marks):
        return "unterminated"
    if has_repeated_ngram(ngram_units(body, language), rules.ngram):
        return "repetition"
    if rules.meta_words:
        lines = [ln for ln in body.split("\n") if ln.strip()]
        edge = lines[: rules.meta_head_lines] + lines[-rules.meta_tail_lines :]
        words = {w.lower() for ln in edge for w in re.findall(r"[A-Za-z]+", ln)}
        words |= {w[:-1] for w in words if w.endswith("s")}  # "responses" is "response"
        if words & set(rules.meta_words):
            return "meta_words"
    return None
