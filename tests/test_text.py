from dataclasses import replace

from selflengthen.core.text import (
    QualityRules,
    count_words,
    count_words_longwriter,
    detect_language,
    drop_preface,
    first_half,
    has_repeated_ngram,
    keep_leading_two_thirds,
    lowest_window_compression,
    ngram_units,
    quality_problem,
    split_paragraphs,
    trim_to_words,
)

# The reference's variants (algorithm.md 1.5); tests/test_quality_reference.py checks each
# detail in which it differs from a plausible reimplementation, and the shipped config.
EN = QualityRules(terminal_marks=(".", "!", "?", ",", ";", ":", "-", '"', "'", ")", "]", "}", ">", "`"),
                  ngram=10, meta_words=("revised", "revision", "response", "version", "paragraph"))
ZH = QualityRules(terminal_marks=("。", "！", "？", "…", "”", "’", "）", "】", ")", "]", "}", ">", "`"), ngram=13)


def test_count_words_latin_cjk_and_fullwidth():
    assert count_words("one two  three\nfour") == 4
    assert count_words("我爱北京") == 4
    assert count_words("我爱Python编程") == 5  # 4 ideographs + 1 token
    assert count_words("你好，世界。") == 6  # CJK punctuation (U+3000-303F, U+FF00-FFEF) counts too
    assert count_words("") == 0


def test_longwriter_counter_differs():
    text = "Hello, world! 你好，世界 2024 x-ray"
    assert count_words_longwriter(text) == 4 + 4  # hello world x ray + 4 ideographs; digits and punctuation not
    assert count_words(text) == 5 + 4  # 4 ideographs + the full-width comma; 'Hello,' 'world!' '2024' 'x-ray'


def test_detect_language():
    assert detect_language("Write a story about the sea.") == "en"
    assert detect_language("写一篇关于大海的故事。") == "zh"
    assert detect_language("请用 Python 写一个关于排序算法的长篇教程") == "zh"


def test_split_paragraphs_blank_lines_then_newlines():
    assert split_paragraphs("a\n\nb\n\n c \n\n\nd") == ["a", "b", "c", "d"]
    # two blank-line paragraphs only: fall back to single newlines
    assert split_paragraphs("l1\nl2\n\nl3") == ["l1", "l2", "l3"]
    assert split_paragraphs("one paragraph") == ["one paragraph"]


def test_first_half_and_two_thirds():
    text = "\n\n".join(f"p{i}" for i in range(5))
    half, taken, n = first_half(text)
    assert (half, taken, n) == ("p0\n\np1", 2, 5)
    assert keep_leading_two_thirds("\n\n".join(f"q{i}" for i in range(7))) == "q0\n\nq1\n\nq2\n\nq3"
    assert keep_leading_two_thirds("only one") == ""


def test_trim_to_words_cuts_at_the_last_terminated_line_within_the_bound():
    text = "One two three.\nfour five\nsix seven.\n\neight nine ten,\neleven"
    assert trim_to_words(text, 2, EN.terminal_marks) == ""  # no line ends within two words
    assert trim_to_words(text, 4, EN.terminal_marks) == "One two three."
    assert trim_to_words(text, 8, EN.terminal_marks) == "One two three.\nfour five\nsix seven."  # "five" is no end
    assert trim_to_words(text, 10, EN.terminal_marks) == "One two three.\nfour five\nsix seven.\n\neight nine ten,"
    assert trim_to_words(text, 11, EN.terminal_marks) == trim_to_words(text, 10, EN.terminal_marks)  # "eleven" no end
    done = text + "."
    assert trim_to_words(done, 11, EN.terminal_marks) == done  # the whole text when it fits
    zh = "第一句话。\n第二句话。\n第三"
    assert trim_to_words(zh, 9, ZH.terminal_marks) == "第一句话。"  # a CJK character is a word
    assert trim_to_words(zh, 12, ZH.terminal_marks) == "第一句话。\n第二句话。"


def test_drop_preface_removes_only_a_line_that_introduces_the_text():
    body = "The sea is wide.\n\nIt is blue."
    assert drop_preface("Here is the expanded version:\n\n" + body, "en") == body
    assert drop_preface("Sure! Here's a fuller draft:\n" + body, "en") == body
    assert drop_preface("**Revised response:**\n" + body, "en") == body  # markdown emphasis around it
    assert drop_preface("以下是扩写后的文章：\n\n大海很宽。", "zh") == "大海很宽。"
    kept = ["Introduction:\n" + body,  # a heading, not a reply
            "Here is the sea, wide and blue.\n" + body,  # no colon: the text itself
            "Here is the expanded version:",  # nothing after it
            "Here are " + "many " * 30 + "reasons:\n" + body]  # too long for a preface
    for text in kept:
        assert drop_preface(text, "en") is text, text
    draft = "Here are three reasons the sea matters:\nFirst, it is wide."
    assert drop_preface(draft + "\nSecond, it is blue.", "en", source=draft).startswith("Here are three")  # the draft's own opening
    assert drop_preface("Here is the expanded version:\n" + body, "xx").startswith("Here is")  # no pattern for it


def test_a_loop_without_spaces_fails_only_with_a_loop_floor():
    """`':':':'` runs are one whitespace token each, so the 10-gram rule never sees them
    repeat; a window that zlib squeezes below the floor does."""
    rng = __import__("random").Random(0)
    vocab = [f"w{i}{c}" for i in range(300) for c in "ab"]
    prose = " ".join(rng.choice(vocab) for _ in range(400)) + "."
    loop = prose[:600] + " " + "".join(rng.choice(["':", "':'", ": '"]) for _ in range(400)) + " end."
    assert lowest_window_compression(prose) > 0.3 and lowest_window_compression(loop) < 0.2
    assert quality_problem(loop, EN, "en") is None  # the reference's check passes it
    floored = replace(EN, loop_floor=0.25)
    assert quality_problem(loop, floored, "en") == "loop"
    assert quality_problem(prose, floored, "en") is None
    assert quality_problem("Short.", floored, "en") is None  # shorter than a window: the whole text
    assert quality_problem("Ends" + " '" * 300 + ".", floored, "en") == "repetition"  # spaced: the n-gram rule


def test_quality_terminal_marks_by_language():
    assert quality_problem("It ends well.", EN, "en") is None
    assert quality_problem("It ends well.   \n", EN, "en") is None
    assert quality_problem("It just stops and", EN, "en") == "unterminated"
    assert quality_problem("结尾完整。", ZH, "zh") is None
    assert quality_problem("结尾不完整，", ZH, "zh") == "unterminated"  # the full-width comma is not terminal in zh
    assert quality_problem("   ", EN, "en") == "empty"


def test_quality_repetition_en_is_10_tokens():
    nine = "a b c d e f g h i"
    assert quality_problem(f"{nine} x {nine} y.", EN, "en") is None  # a repeated 9-gram is fine
    ten = nine + " j"
    assert quality_problem(f"{ten} x {ten} y.", EN, "en") == "repetition"


def test_quality_repetition_zh_units():
    units = ngram_units("我们用Python3写代码", "zh")
    assert units == ["我", "们", "用", "Python3", "写", "代", "码"]
    assert ngram_units("用 Python 3\n写", "zh") == ["用", " Python 3\n", "写"]  # whitespace joins the ASCII run
    twelve = "一二三四五六七八九十百千"
    assert quality_problem(f"{twelve}甲{twelve}乙。", ZH, "zh") is None
    thirteen = twelve + "万"
    assert quality_problem(f"{thirteen}甲{thirteen}乙。", ZH, "zh") == "repetition"
    assert has_repeated_ngram(list("abcabc"), 3) and not has_repeated_ngram(list("abcabd"), 3)


def test_quality_meta_words_only_at_the_edges():
    body = "\n".join(f"Line {i} of the story goes on." for i in range(10))
    assert quality_problem(body, EN, "en") is None
    assert quality_problem("Here is the revised text.\n" + body, EN, "en") == "meta_words"
    assert quality_problem(body + "\nI hope this version helps.", EN, "en") == "meta_words"
    middle = body.split("\n")
    middle[5] = "The paragraph in the middle is fine."
    assert quality_problem("\n".join(middle), EN, "en") is None
    assert quality_problem("Our responses were quick.\n" + body, EN, "en") == "meta_words"  # a substring
    assert quality_problem("Responses were quick.\n" + body, EN, "en") is None  # case-sensitive
    assert quality_problem("这是修改后的版本。", ZH, "zh") is None  # no meta words in the zh variant
