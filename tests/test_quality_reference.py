"""The quality check matches the reference (algorithm.md 1.5; QwenLM/Self-Lengthen,
check_response in llama/utils.py and qwen/utils.py) detail by detail, with literal texts;
and our variants (unit_mode, meta_match, meta_lines, cut) are opt-in per language in conf/."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from selflengthen import preflight
from selflengthen.config import schema
from selflengthen.core.quality import QualityCheck
from selflengthen.core.text import QualityRules, ngram_units, quality_problem

CONF = Path(__file__).resolve().parent.parent / "conf"
EN_MARKS = (".", "!", "?", ",", ";", ":", "-", '"', "'", ")", "]", "}", ">", "`")
ZH_MARKS = ("。", "！", "？", "…", "”", "’", "）", "】", ")", "]", "}", ">", "`")
META = ("revised", "revision", "response", "version", "paragraph")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=["model=qwen2.5-7b-instruct", *overrides])


def rules_from(*overrides: str):
    """loop.quality of the composed config as the check's rules (config.schema.Loop.quality_rules)."""
    return schema.from_node(schema.Loop, composed(*overrides).loop).quality_rules()


def config_problems(*overrides: str) -> list[str]:
    """The up-front problems of the loop.quality.* keys."""
    return [p for p in preflight.problems(composed(*overrides)) if p.startswith("loop.quality")]


@pytest.fixture(scope="module")
def shipped():
    return rules_from()


def left_to_right_units(text: str) -> list[str]:
    """The reference's unit build spelled out as algorithm.md 1.5 states it: an ASCII
    character joins the previous unit when the previous character was ASCII too; any
    other character starts a unit; the first character always starts one."""
    units: list[str] = []
    for i, ch in enumerate(text):
        if i > 0 and ord(ch) < 128 and ord(text[i - 1]) < 128:
            units[-1] += ch
        else:
            units.append(ch)
    return units


def test_shipped_config_is_the_reference(shipped):
    assert shipped["en"] == QualityRules(terminal_marks=EN_MARKS, ngram=10, meta_words=META)
    assert shipped["zh"] == QualityRules(terminal_marks=ZH_MARKS, ngram=13)
    for rules in shipped.values():
        assert (rules.unit_mode, rules.meta_match, rules.meta_lines, rules.cut) == ("reference", "substring", "raw",
                                                                                "reference")
        assert (rules.meta_head_lines, rules.meta_tail_lines) == (2, 3)


# (a) Chinese units -------------------------------------------------------------------

@pytest.mark.parametrize("text, units", [
    ("中文 abc def\n更多", ["中", "文", " abc def\n", "更", "多"]),  # spaces and newline inside one unit
    ("ab 中", ["ab ", "中"]),                                       # the first character starts a unit
    ("\n\n中\t", ["\n\n", "中", "\t"]),
    ("咖啡café au lait。", ["咖", "啡", "caf", "é", " au lait", "。"]),  # é is not ASCII: its own unit
    ("全角\u3000空格 x", ["全", "角", "\u3000", "空", "格", " x"]),     # U+3000 is not ASCII
    ("a\x7fb\x00c中", ["a\x7fb\x00c", "中"]),                          # every code point < 128 is ASCII
])
def test_zh_reference_units(text, units):
    assert ngram_units(text, "zh") == units
    assert left_to_right_units(text) == units


def test_zh_reference_units_equal_the_left_to_right_build_on_mixed_text():
    text = "第一章 Intro\n\n他说：“Hello, world!” 然后 (笑)…\n- item 1\n- item 2\n结束。 \u3000"
    assert ngram_units(text, "zh") == left_to_right_units(text)


def test_zh_compact_units_drop_whitespace():
    assert ngram_units("中文 abc def\n更多", "zh", "compact") == ["中", "文", "abc", "def", "更", "多"]


def test_zh_spacing_hides_a_repetition_from_the_reference_only():
    seq = "一二三四五六七八九十百千万"  # 13 characters
    text = f"{seq}甲{' '.join(seq)}。"  # the second copy has ASCII spaces between its characters
    assert quality_problem(text, QualityRules(ZH_MARKS, 13), "zh") is None
    assert quality_problem(text, QualityRules(ZH_MARKS, 13, unit_mode="compact"), "zh") == "repetition"
    assert quality_problem(f"{seq}\n{seq}。", QualityRules(ZH_MARKS, 13), "zh") == "repetition"


# (b) English meta words ---------------------------------------------------------------

BODY = "\n".join(f"Line {i} of the story goes on." for i in range(8))


@pytest.mark.parametrize("first_line, problem", [
    ("The conversion took all night.", "meta_words"),      # substring of a longer word
    ("Two versions of the map existed.", "meta_words"),
    ("Response times were slow.", None),                    # case-sensitive: "Response" is not "response"
    ("A REVISED plan followed.", None),
    ("The paragraphs were short.", "meta_words"),
])
def test_en_meta_words_are_case_sensitive_substrings(first_line, problem):
    en = QualityRules(EN_MARKS, 10, META)
    assert quality_problem(f"{first_line}\n{BODY}", en, "en") == problem


def test_en_meta_words_opt_in_whole_words_any_case():
    word = QualityRules(EN_MARKS, 10, META, meta_match="word")
    assert quality_problem(f"The conversion took all night.\n{BODY}", word, "en") is None
    assert quality_problem(f"Responses were slow.\n{BODY}", word, "en") == "meta_words"
    assert quality_problem(f"A REVISED plan followed.\n{BODY}", word, "en") == "meta_words"


def test_en_meta_lines_count_blank_lines_in_the_reference():
    raw = QualityRules(EN_MARKS, 10, META)
    nonblank = QualityRules(EN_MARKS, 10, META, meta_lines="nonblank")
    head = f"Title.\n\nHere is the revised story.\n{BODY}"  # 3rd raw line, 2nd non-blank line
    assert quality_problem(head, raw, "en") is None
    assert quality_problem(head, nonblank, "en") == "meta_words"
    tail = f"{BODY}\nThis version ends here.\n\n\nThe end."  # 4th raw line from the end
    assert quality_problem(tail, raw, "en") is None
    assert quality_problem(tail, nonblank, "en") == "meta_words"
    # a short text's lines are both head and tail; the middle of a long one is not looked at
    assert quality_problem("One revised line.", raw, "en") == "meta_words"
    lines = BODY.split("\n")
    lines[3] = "The revised middle line."
    assert quality_problem("\n".join(lines), raw, "en") is None


def test_zh_has_no_meta_words(shipped):
    assert quality_problem("这是 revised version。", shipped["zh"], "zh") is None


# (c) terminal marks: the last character only --------------------------------------------

@pytest.mark.parametrize("language, text, problem", [
    ("en", "It trails off...", None),              # passes through "."
    ("zh", "故事到此为止...", "unterminated"),        # "." is not a Chinese terminal mark
    ("zh", "故事到此为止……", None),                  # U+2026 is
    ("zh", "他说：“好。”", None),
    ("zh", "结尾不完整，", "unterminated"),
    ("zh", "结尾完整。\u3000\u3000\n", None),         # str.rstrip() strips U+3000 too
    ("en", "It ends.\u00a0\t\n", None),             # and NBSP
    ("en", "It ends with code `x`", None),
    ("en", "It just stops and", "unterminated"),
    ("en", "", "empty"),
    ("zh", " \u3000\n", "empty"),
])
def test_terminal_mark_is_the_last_character(shipped, language, text, problem):
    assert quality_problem(text, shipped[language], language) == problem


def test_multi_character_terminal_marks_are_rejected_in_config():
    found = config_problems('loop.quality.zh.terminal_marks=["。","..."]')
    assert len(found) == 1 and "loop.quality.zh.terminal_marks" in found[0] and "'...'" in found[0]


# order of checks ---------------------------------------------------------------------

def test_order_unterminated_then_meta_words_then_repetition(shipped):
    en, ten = shipped["en"], "a b c d e f g h i j"
    both = f"Here is the revised text.\n{ten} x {ten} y."
    assert quality_problem(both, en, "en") == "meta_words"  # meta words before n-grams
    assert quality_problem(both[:-1] + " and", en, "en") == "unterminated"  # the terminal mark first
    assert quality_problem(f"{ten} x {ten} y.", en, "en") == "repetition"
    check = QualityCheck(shipped)
    assert [check(t, "en") for t in (both, f"{ten} x {ten} y.", "", "Fine.")] == [False, False, False, True]
    assert check.summary()["failures"] == {"meta_words": 1, "repetition": 1, "empty": 1}


def test_a_cut_text_fails_first_only_when_cut_is_reject(shipped):
    finished_looking = "It ends with a terminal mark, as a cut text may:"
    assert quality_problem(finished_looking, shipped["en"], "en", cut=True) is None  # the reference's way
    en = rules_from("loop.quality.en.cut=reject")["en"]
    assert en.cut == "reject"
    assert quality_problem(finished_looking, en, "en") is None
    assert quality_problem(finished_looking, en, "en", cut=True) == "cut"
    assert quality_problem("", en, "en", cut=True) == "empty"
    found = config_problems("loop.quality.zh.cut=drop")
    assert len(found) == 1 and "['reference', 'reject']" in found[0]


def test_n_grams_are_read_on_the_stripped_text(shipped):
    twelve = "一二三四五六七八九十百千"
    # right-stripped first: else the last ASCII unit would be "(a)  \n", not "(a)", and the
    # repeated 13-gram 一…千 (a) would go unseen
    assert quality_problem(f"{twelve}(a){twelve}(a)  \n", shipped["zh"], "zh") == "repetition"
    assert quality_problem(f"{twelve}(a){twelve}(b)  \n", shipped["zh"], "zh") is None


# opt-in from conf/ -------------------------------------------------------------------

def test_opt_ins_are_read_from_config():
    rules = rules_from("loop.quality.zh.unit_mode=compact", "loop.quality.en.meta_match=word",
                       "loop.quality.en.meta_lines=nonblank")
    assert rules["zh"].unit_mode == "compact" and rules["en"].unit_mode == "reference"
    assert (rules["en"].meta_match, rules["en"].meta_lines) == ("word", "nonblank")
    assert (rules["zh"].meta_match, rules["zh"].meta_lines) == ("substring", "raw")


def test_bad_modes_are_all_reported_with_the_choices():
    found = config_problems("loop.quality.zh.unit_mode=tight", "loop.quality.en.meta_match=regex")
    assert len(found) == 2, found
    unit = next(p for p in found if "unit_mode" in p)
    match = next(p for p in found if "meta_match" in p)
    assert unit.startswith("loop.quality.zh.unit_mode='tight'") and "['reference', 'compact']" in unit
    assert match.startswith("loop.quality.en.meta_match='regex'") and "\n" not in match
