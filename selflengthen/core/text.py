"""Text utilities shared by every stage: word counts, paragraph splits, language
detection and the response quality check (algorithm.md 1.5, 1.7)."""
from __future__ import annotations

import re
import zlib
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


def trim_to_words(text: str, limit: int, terminal_marks) -> str:
    """The longest prefix of text that ends at a line break (or is the whole text), holds at
    most `limit` words and ends, right-stripped, in one of `terminal_marks`; "" when none
    does. Lines are whitespace-separated, so their word counts add up."""
    total, start, best = 0, 0, 0
    for line in text.split("\n"):
        total += count_words(line)
        if total > limit:
            break
        body = line.rstrip()
        if body and body[-1] in terminal_marks:  # a blank line ends where the line before it did
            best = start + len(body)
        start += len(line) + 1
    return text[:best]


_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


# A line a chat model puts before the text it was asked for ("Here is the expanded version:",
# "**Revised draft:**", "以下是扩写后的文章："): it opens with a reply word or names the rewrite,
# and ends in a colon. Such a line is about the text, not part of it.
_PREFACE = {
    "en": re.compile(r"^(?:(?:here(?:'s|’s|\s+is|\s+are)|sure|certainly|of course|okay|ok|below|the following)\b"
                     r"|.*\b(?:expanded|revised|revision|rewritten|rewrite|version|draft|response)\b)", re.IGNORECASE),
    "zh": re.compile(r"^(?:以下|下面|好的|当然|.*(?:扩写|改写|修改|版本))"),
}
_PREFACE_MAX_WORDS = 30


def drop_preface(text: str, language: str, source: str = "") -> str:
    """text without its first line when that line introduces the text rather than begins it:
    at most 30 words, ending in a colon once markdown emphasis is stripped, opening with a
    reply word or naming the rewrite (_PREFACE), and not found in `source` (the draft the
    text rewrites, whose own opening stays). Anything else is returned unchanged."""
    pattern = _PREFACE.get(language)
    head, _, rest = text.lstrip().partition("\n")
    line = head.strip(" \t\r*#_")  # "**Revised draft:**" is judged as "Revised draft:"
    if (pattern is None or not rest.strip() or count_words(line) > _PREFACE_MAX_WORDS
            or not line.endswith((":", "：")) or not pattern.match(line) or head.strip() in source):
        return text
    return _LEADING_BLANK_LINES.sub("", rest)


def continue_after(prefix: str, continuation: str) -> str:
    """Stage 2's text: the prefix the model was handed as the start of its turn (the kept
    Stage-1 paragraphs and a blank line), then what it wrote. The model may open with
    newlines of its own after that blank line; they are dropped, so the join is one
    paragraph break. Left in, the join holds three newlines, a stop string of the sampling
    that no generated text contains: a model trained on it learns to stop there."""
    if prefix:
        continuation = _LEADING_BLANK_LINES.sub("", continuation)
    return (prefix + continuation).strip()


def keep_lines(text: str, keep_prob: float, rng) -> list[str]:
    """The non-blank lines of text, each kept with probability keep_prob (never none)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    return [ln for ln in lines if rng.random() < keep_prob] or lines[:1]


# The reference's variants (QwenLM/Self-Lengthen, llama/utils.py and qwen/utils.py,
# check_response) are the defaults; "compact", "word" and "nonblank" are our opt-ins.
UNIT_MODES = ("reference", "compact")
META_MATCHES = ("substring", "word")
META_LINES = ("raw", "nonblank")
CUT_MODES = ("reference", "reject")

# zh units. Reference: a maximal run of ASCII characters (any code point < 128, spaces and
# newlines included) is one unit, every other character a unit of its own; equal to the
# reference's left-to-right build where an ASCII char joins the previous unit when the
# previous char was ASCII too. Compact: runs of printable ASCII, whitespace dropped.
_ZH_UNITS = {"reference": re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]"),
             "compact": re.compile(r"[\x21-\x7e]+|[^\x00-\x7f\s]")}


def ngram_units(text: str, language: str, mode: str = "reference") -> list[str]:
    """Units for the repetition check: str.split() tokens (en, any mode); for zh, ASCII
    runs and single other characters, split per `mode` (see _ZH_UNITS)."""
    if language == "zh":
        return _ZH_UNITS[mode].findall(text)
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
    """One language's variant of the quality check; values come from conf/ and the
    defaults of the mode fields are the reference's behaviour."""

    terminal_marks: tuple[str, ...]   # single characters: only the last one is compared
    ngram: int
    meta_words: tuple[str, ...] = ()
    meta_head_lines: int = 2
    meta_tail_lines: int = 3
    unit_mode: str = "reference"      # zh units: "reference" (ASCII runs incl. whitespace) | "compact"
    meta_match: str = "substring"     # "substring" (case-sensitive) | "word" (whole words, any case, plural s)
    meta_lines: str = "raw"           # "raw" (split("\n"), blank lines count) | "nonblank"
    cut: str = "reference"            # a text cut at the token cap: "reference" (checked like any) | "reject"
    loop_floor: float | None = None   # None (the reference's): off; else reject a window compressing below it

    def __post_init__(self):
        assert self.unit_mode in UNIT_MODES, self.unit_mode
        assert self.meta_match in META_MATCHES, self.meta_match
        assert self.meta_lines in META_LINES, self.meta_lines
        assert self.cut in CUT_MODES, self.cut


def _edge_lines(body: str, rules: QualityRules) -> list[str]:
    """The first head and last tail lines (a short text's lines may be in both)."""
    lines = body.split("\n")
    if rules.meta_lines == "nonblank":
        lines = [ln for ln in lines if ln.strip()]
    return lines[: rules.meta_head_lines] + lines[max(len(lines) - rules.meta_tail_lines, 0) :]


def has_meta_words(body: str, rules: QualityRules) -> bool:
    """Whether the text's edges talk about the text itself ("Here is the revised version")."""
    edges = _edge_lines(body, rules)
    if rules.meta_match == "substring":
        joined = "\n".join(edges)
        return any(word in joined for word in rules.meta_words)
    words = {w.lower() for ln in edges for w in re.findall(r"[A-Za-z]+", ln)}
    words |= {w[:-1] for w in words if w.endswith("s")}  # "responses" is "response"
    return bool(words & {w.lower() for w in rules.meta_words})


LOOP_WINDOW, LOOP_STEP = 1024, 256  # bytes: a window holds ~150-200 English words


def zlib_ratio(raw: bytes) -> float:
    """zlib-compressed bytes / raw bytes: LOW for repetitive text (core.signals reports it per
    text; the loop rule below takes it per window)."""
    return len(zlib.compress(raw, 9)) / len(raw)


def lowest_window_compression(text: str) -> float:
    """The lowest zlib ratio (compressed / raw bytes) over windows of LOOP_WINDOW UTF-8 bytes,
    LOOP_STEP apart (the whole text when shorter). Prose compresses to ~0.4-0.6 in such a
    window; a loop that repeats a few characters (`':':':'`) to well under 0.25, and one
    without spaces is a single whitespace token, which the n-gram rule never sees repeat."""
    raw = text.encode("utf-8")
    if len(raw) <= LOOP_WINDOW:
        return zlib_ratio(raw) if raw else 1.0
    starts = list(range(0, len(raw) - LOOP_WINDOW + 1, LOOP_STEP)) + [len(raw) - LOOP_WINDOW]
    return min(zlib_ratio(raw[i : i + LOOP_WINDOW]) for i in starts)


def quality_problem(text: str, rules: QualityRules, language: str, cut: bool = False) -> str | None:
    """Why a response fails the quality check, or None when it passes. In the reference's
    order, on the right-stripped text: 'empty', 'unterminated' (last character not a
    terminal mark), 'meta_words' (variants with meta words), 'repetition'; then, with
    rules.loop_floor set (not the reference's), 'loop' (a window that compresses below it). With
    rules.cut == "reject", a text the engine cut at its token cap (`cut`) fails first as
    'cut': it is unfinished whatever its last mark (the reference keeps it when that mark
    happens to be terminal, and a model trained on it learns not to end)."""
    body = text.rstrip()
    if not body:
        return "empty"
    if cut and rules.cut == "reject":
        return "cut"
    if body[-1] not in rules.terminal_marks:
        return "unterminated"
    if rules.meta_words and has_meta_words(body, rules):
        return "meta_words"
    if has_repeated_ngram(ngram_units(body, language, rules.unit_mode), rules.ngram):
        return "repetition"
    if rules.loop_floor is not None and lowest_window_compression(body) < rules.loop_floor:
        return "loop"
    return None
