"""Judge-free quality signals of generated texts (issue 29): pure functions, no model.

For one text (`text_signals`), in English and Chinese:
  distinct_2/3/4       unique n-grams / total n-grams. Lower = more repetitive.
  repeated_ngram_rate  the quality check's repetition rule (text.has_repeated_ngram; n=10
                       for en, 13 for zh, as conf/loop/selflengthen.yaml) as a rate: the
                       share of n-gram positions whose n-gram occurs more than once.
                       Higher = more repetitive; > 0 exactly when the check says 'repetition'.
  compression_ratio    len(zlib.compress(utf8)) / len(utf8). LOWER = more repetitive (zlib
                       squeezes repeats); compare texts of similar length only, as zlib's
                       fixed overhead lifts short texts (a few words may score above 1).
  words                text.count_words, the project's counter.
  ending               how the output ended, from the caller's finish label (see `ending`).
n-grams are over text.ngram_units, the quality check's units: str.split() tokens for en,
single characters (ASCII runs kept whole) for zh. The language is the caller's (a record's
"language") or, when not given, text.detect_language. A signal a text is too short to have
(no n-grams, empty text) is None, and set means skip it.

Endings. Engines (selflengthen/engines/base.py, Completion) report finish_reason "stop"
(end of turn or a stop string), "length" (hit max_tokens or the context) or "no_room" (the
prompt filled the context), and where they know it ended_by: the end-of-turn token's text
(e.g. "<|im_end|>"), "stop_string" or "max_tokens". Records keep finish_reason (evaluation
rows, AgentWrite steps, DPO samples). `ending` maps either vocabulary onto
eos | stop_string | cap | no_room | unknown; "stop" alone counts as eos.

Along one output: `segments` cuts a text into k consecutive pieces by words and
`signals_by_segment` gives each piece's signals, to see whether a long text degrades
toward its end. `aggregate` and `aggregate_by_segment` give flat dicts for metrics.json;
`worse_by` lists the signals that moved in the degenerate direction between two of them;
`segment_series` reads one signal's per-segment means back out of such a dict.
"""
from __future__ import annotations

import re
from collections import Counter

from selflengthen.core.text import (_CJK_WORD, QualityRules, count_words, detect_language, lowest_window_compression,
                                    ngram_units, zlib_ratio)

DISTINCT_NS = (2, 3, 4)
REPEAT_N = {"en": 10, "zh": 13}  # the shipped quality rules' ngram (loop.quality.<lang>.ngram)
ENDINGS = ("eos", "stop_string", "cap", "no_room", "unknown")
_ENDING = {"stop": "eos", "eos": "eos", "stop_string": "stop_string", "length": "cap",
           "max_tokens": "cap", "cap": "cap", "no_room": "no_room"}
# +1: higher is degenerate; -1: lower is degenerate. Keys of `aggregate` (and their _segN).
DEGENERATE = {"distinct_2": -1, "distinct_3": -1, "distinct_4": -1, "repeated_ngram_rate": +1,
              "compression_ratio": -1, "cap_rate": +1}
# One word as count_words counts them: a CJK character, or a whitespace token without one.
_WORD = re.compile(f"{_CJK_WORD.pattern}|(?:(?!{_CJK_WORD.pattern})\\S)+")
_SEG = re.compile(r"^(.*)_seg\d+$")


def ending(finish: str | None, ended_by: str = "") -> str:
    """One of ENDINGS from an engine's finish_reason and/or ended_by (ended_by wins when
    set). An end-of-turn token's text ("<|im_end|>", "</s>") is eos; anything else unknown."""
    for label in (ended_by, finish):
        if label in _ENDING:
            return _ENDING[label]
        if label and label.startswith("<") and label.endswith(">"):
            return "eos"
    return "unknown"


def is_cut(finish: str | None, ended_by: str = "") -> bool:
    """Whether the engine stopped the text at its token cap (`ending` is "cap")."""
    return ending(finish, ended_by) == "cap"


def _grams(units: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]


def distinct_n(units: list[str], n: int) -> float | None:
    """Unique n-grams / n-gram positions; None with no n-gram."""
    grams = _grams(units, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(units: list[str], n: int) -> float | None:
    """Share of n-gram positions whose n-gram occurs more than once; None with no n-gram."""
    grams = _grams(units, n)
    if not grams:
        return None
    counts = Counter(grams)
    return sum(counts[g] > 1 for g in grams) / len(grams)


def compression_ratio(text: str) -> float | None:
    """zlib-compressed bytes / raw UTF-8 bytes: LOW for repetitive text; None when empty."""
    raw = text.encode("utf-8")
    return zlib_ratio(raw) if raw else None


def repetition(text: str, language: str | None = None, rules: QualityRules | None = None) -> dict:
    """How much one text repeats itself, the one measure the evaluation (text_signals) and
    the RL repetition reward (core/rewards.py) share: repeated_ngram_rate (see the module
    docstring; None without an n-gram) and window_compression, the lowest zlib ratio over
    the text's 1 KiB windows (text.lowest_window_compression, the quality check's loop rule:
    ~0.4-0.6 for prose, well under 0.25 for a loop; 1.0 for an empty text). `rules` as for
    text_signals."""
    language = language or detect_language(text)
    units = ngram_units(text, language, rules.unit_mode if rules else "reference")
    n = rules.ngram if rules else REPEAT_N.get(language, REPEAT_N["en"])  # other languages split like en
    return {"repeated_ngram_rate": repeated_ngram_rate(units, n), "window_compression": lowest_window_compression(text)}


def text_signals(text: str, language: str | None = None, finish: str | None = None,
                 rules: QualityRules | None = None, ended_by: str = "") -> dict:
    """The signals of one text (module docstring); finish and ended_by as for `ending`.
    `rules`, a language's QualityRules from the config, sets the repetition n and the zh
    unit mode; without it REPEAT_N and the reference's units. The repetition rate comes from
    `repetition`, which the RL reward reads too."""
    language = language or detect_language(text)
    units = ngram_units(text, language, rules.unit_mode if rules else "reference")
    out: dict = {f"distinct_{n}": distinct_n(units, n) for n in DISTINCT_NS}
    out["repeated_ngram_rate"] = repetition(text, language, rules)["repeated_ngram_rate"]
    out["compression_ratio"] = compression_ratio(text)
    out["words"] = count_words(text)
    out["ending"] = ending(finish, ended_by)
    return out


SIGNALS = (*(f"distinct_{n}" for n in DISTINCT_NS), "repeated_ngram_rate", "compression_ratio", "words")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def aggregate(texts: list[str], languages: list[str | None] | None = None,
              finishes: list[str | None] | None = None, rules: dict[str, QualityRules] | None = None) -> dict:
    """Set-level signals, a flat dict with fixed keys: the mean of each of SIGNALS (None
    when no text has it), texts, ended_<ending> counts for each of ENDINGS, and cap_rate
    (ended_cap / texts). languages, finishes: one per text (None: detect / unknown); a
    finish may be a finish_reason or an ended_by, as `ending` reads either."""
    languages = languages or [None] * len(texts)
    finishes = finishes or [None] * len(texts)
    per = [text_signals(t, lang, fin, _rules(rules, t, lang))
           for t, lang, fin in zip(texts, languages, finishes, strict=True)]
    out: dict = {name: _mean([p[name] for p in per]) for name in SIGNALS}
    out["texts"] = float(len(per))
    ends = Counter(p["ending"] for p in per)
    out.update({f"ended_{e}": float(ends[e]) for e in ENDINGS})
    out["cap_rate"] = ends["cap"] / len(per) if per else None
    return out


def _rules(rules: dict[str, QualityRules] | None, text: str, language: str | None) -> QualityRules | None:
    return rules.get(language or detect_language(text)) if rules else None


def segments(text: str, k: int = 4) -> list[str]:
    """k consecutive pieces of text holding floor(w/k) words each (count_words' words),
    the last the remainder. Fewer than k words: one piece per word (none when empty).
    Cuts fall just before a word, so "".join(segments(text, k)) == text."""
    assert k >= 1, k
    starts = [m.start() for m in _WORD.finditer(text)]
    if not starts:
        return []
    size = max(len(starts) // k, 1)
    cuts = [0] + [starts[i * size] for i in range(1, min(k, len(starts)))] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


def signals_by_segment(text: str, k: int = 4, language: str | None = None,
                       rules: QualityRules | None = None) -> list[dict]:
    """text_signals of each of segments(text, k), without ending. The language is the whole
    text's, so a segment of English code in a Chinese text keeps Chinese units."""
    language = language or detect_language(text)
    out = []
    for piece in segments(text, k):
        signals = text_signals(piece, language, None, rules)
        del signals["ending"]
        out.append(signals)
    return out


def aggregate_by_segment(texts: list[str], k: int = 4, languages: list[str | None] | None = None,
                         rules: dict[str, QualityRules] | None = None) -> dict:
    """Per-segment means over a set: '<signal>_seg<i>' for i in 1..k and each of SIGNALS
    (None when no text has segment i, e.g. all shorter than i words)."""
    languages = languages or [None] * len(texts)
    per = [signals_by_segment(t, k, lang, _rules(rules, t, lang))
           for t, lang in zip(texts, languages, strict=True)]
    return {f"{name}_seg{i + 1}": _mean([p[i][name] for p in per if len(p) > i])
            for i in range(k) for name in SIGNALS}


def segment_series(summary: dict, name: str) -> list[float | None]:
    """One signal's per-segment means out of an aggregate_by_segment (or set_summary) dict,
    segment 1 first: [summary["<name>_seg1"], ...]; empty when it has none."""
    k = 0
    while f"{name}_seg{k + 1}" in summary:
        k += 1
    return [summary[f"{name}_seg{i}"] for i in range(1, k + 1)]


def set_summary(texts: list[str], languages: list[str | None] | None = None,
                finishes: list[str | None] | None = None, k: int = 4) -> dict:
    """aggregate() and aggregate_by_segment() of one set in one flat dict: what metrics.json
    and an evaluation's summary.json record of a set of texts."""
    return {**aggregate(texts, languages, finishes), **aggregate_by_segment(texts, k, languages)}


def worse_by(previous: dict, current: dict, margin: float) -> list[tuple[str, float, float]]:
    """(key, previous, current) for each signal of DEGENERATE (and its _segN keys) present
    in both that moved in the degenerate direction by more than margin, relative to the
    previous value: current < previous*(1-margin) where lower is degenerate, current >
    previous*(1+margin) where higher is (so from 0, any rise). In previous' key order."""
    out = []
    for key, before in previous.items():
        match = _SEG.match(key)
        sign = DEGENERATE.get(match.group(1) if match else key)
        after = current.get(key)
        if sign is None or before is None or after is None:
            continue
        if (sign < 0 and after < before * (1 - margin)) or (sign > 0 and after > before * (1 + margin)):
            out.append((key, before, after))
    return out
