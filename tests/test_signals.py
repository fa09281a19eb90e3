import pytest

from selflengthen.core.signals import (SIGNALS, aggregate, aggregate_by_segment, compression_ratio, ending,
                                       segment_series, segments, signals_by_segment, text_signals, worse_by)
from selflengthen.core.text import QualityRules, count_words, has_repeated_ngram, ngram_units

ZH13 = "一二三四五六七八九十百千万"  # 13 different characters: one zh repetition n-gram

VARIED = (
    "The harbour woke slowly that morning. Fishermen hauled nets across wet planks while gulls argued "
    "over scraps near the tide line. Maria counted crates of mackerel and wrote each total in a "
    "battered ledger her grandfather had started decades ago. Down the quay, a ferry sounded its horn "
    "twice, warning children who dared each other to leap between moored boats. By noon the fog had "
    "lifted, revealing cliffs streaked with chalk and the distant lighthouse, white against a sky "
    "turning steadily blue. Tourists arrived with cameras, asking about storms, shipwrecks and the old "
    "smuggling caves; Maria answered patiently, although her mind kept drifting toward the letter "
    "still unopened in her coat pocket.")
SENTENCE = "The harbour woke slowly that morning and the fishermen hauled their nets across the planks. "
LOOP = SENTENCE * 10
MILD = VARIED + " " + SENTENCE * 2  # one sentence said twice at the end of a varied text

ZH_VARIED = ("清晨的港口慢慢苏醒。渔民们把湿漉漉的渔网拖过木板，海鸥在潮线附近争抢残渣。玛丽亚清点着一箱箱鲭鱼，"
             "把每个数字写进祖父几十年前开始记的旧账本。码头另一头，渡轮鸣笛两声，提醒那些敢在船只之间跳跃的孩子。"
             "中午雾气散去，白垩色的悬崖和远处的灯塔显露出来，天空渐渐变蓝。")
ZH_LOOP = "清晨的港口慢慢苏醒，渔民们把渔网拖过木板。" * 6


def test_distinct_n_by_hand_english():
    s = text_signals("a b a b a", "en")
    assert s["distinct_2"] == 2 / 4  # ab ba ab ba
    assert s["distinct_3"] == 2 / 3  # aba bab aba
    assert s["distinct_4"] == 2 / 2  # abab baba
    assert s["repeated_ngram_rate"] is None  # 5 tokens: no 10-gram
    assert s["words"] == 5
    assert text_signals("a b c", "en")["distinct_4"] is None


def test_distinct_n_by_hand_chinese_units():
    s = text_signals("我爱我爱我", "zh")
    assert s["distinct_2"] == 2 / 4 and s["distinct_3"] == 2 / 3 and s["distinct_4"] == 1.0
    # an ASCII run is one unit, as in the quality check: 我 爱 Python 我 爱
    assert text_signals("我爱Python我爱", "zh")["distinct_2"] == 3 / 4
    assert text_signals("我爱我爱我")["distinct_2"] == 2 / 4  # language detected as zh


def test_repeated_ngram_rate_by_hand():
    tokens = " ".join(f"t{i}" for i in range(10))
    # 20 tokens, 11 10-gram positions: the grams at 0 and 10 are t0..t9, the rotations between are unique
    assert text_signals(tokens + " " + tokens, "en")["repeated_ngram_rate"] == 2 / 11
    assert text_signals(tokens + " x", "en")["repeated_ngram_rate"] == 0.0
    # zh: 26 characters, 14 13-gram positions, two of them the same
    assert text_signals(ZH13 * 2, "zh")["repeated_ngram_rate"] == 2 / 14
    # the config's rules set n: with n=3, "aba" at 0 and 2 repeats, "bab" does not
    assert text_signals("a b a b a", "en", rules=QualityRules(terminal_marks=(".",), ngram=3))[
        "repeated_ngram_rate"] == 2 / 3


@pytest.mark.parametrize("text,language,n", [
    (VARIED, "en", 10), (MILD, "en", 10), (LOOP, "en", 10), (ZH_VARIED, "zh", 13), (ZH_LOOP, "zh", 13),
    (ZH13 + ZH13[:12], "zh", 13), (ZH13 * 2, "zh", 13)])
def test_repeated_rate_is_the_quality_checks_rule(text, language, n):
    rate = text_signals(text, language)["repeated_ngram_rate"]
    assert (rate > 0) == has_repeated_ngram(ngram_units(text, language), n)


def test_compression_ratio_direction():
    assert compression_ratio("") is None
    assert compression_ratio(LOOP) < compression_ratio(VARIED)
    assert compression_ratio("ab" * 100) < 0.1  # a repeat squeezes to almost nothing


def test_looping_text_scores_degenerate_and_order_follows_a_reader():
    varied, mild, loop = (text_signals(t, "en") for t in (VARIED, MILD, LOOP))
    for n in (2, 3, 4):
        key = f"distinct_{n}"
        assert varied[key] > 0.95 and varied[key] > mild[key] > loop[key]
    assert loop["distinct_2"] < 0.2
    assert varied["repeated_ngram_rate"] == 0.0 < mild["repeated_ngram_rate"] < loop["repeated_ngram_rate"]
    assert loop["repeated_ngram_rate"] > 0.8
    assert varied["compression_ratio"] > mild["compression_ratio"] > loop["compression_ratio"]
    assert loop["compression_ratio"] < 0.3 < varied["compression_ratio"]


def test_chinese_looping_text_scores_degenerate():
    varied, loop = text_signals(ZH_VARIED), text_signals(ZH_LOOP)
    assert loop["distinct_2"] < 0.3 < 0.9 < varied["distinct_2"]
    assert varied["repeated_ngram_rate"] == 0.0 and loop["repeated_ngram_rate"] > 0.8
    assert loop["compression_ratio"] < varied["compression_ratio"]


def test_ending_labels():
    assert ending("stop") == "eos" and ending("length") == "cap" and ending("no_room") == "no_room"
    assert ending("stop", "stop_string") == "stop_string"  # ended_by is the finer label
    assert ending("length", "max_tokens") == "cap"
    assert ending("stop", "<|im_end|>") == "eos" and ending("</s>") == "eos"
    assert ending(None) == "unknown" and ending("stop", "") == "eos" and ending("weird") == "unknown"
    assert text_signals("a.", "en", "length")["ending"] == "cap"
    assert text_signals("a.", "en", "stop", ended_by="stop_string")["ending"] == "stop_string"
    assert aggregate(["a.", "b."], finishes=["max_tokens", "<|im_end|>"])["ended_eos"] == 1.0


def test_segments_edge_cases():
    assert segments("") == [] and segments("  \n ") == []
    assert segments("a b") == ["a ", "b"]  # fewer words than k: one piece per word
    assert segments("a b c d e f g h", 4) == ["a b ", "c d ", "e f ", "g h"]  # exact multiple
    assert segments("a b c d e f g", 4) == ["a ", "b ", "c ", "d e f g"]  # the last takes the remainder
    assert segments("  a\n\nb", 2) == ["  a\n\n", "b"]  # cuts fall just before a word
    assert segments("a b c", 1) == ["a b c"]
    assert segments("我爱北京天安门", 3) == ["我爱", "北京", "天安门"]  # a CJK character is a word
    assert [count_words(s) for s in segments("我爱Python编程 and more", 2)] == [3, 4]
    for text in (VARIED, ZH_VARIED, MILD):
        pieces = segments(text, 4)
        assert "".join(pieces) == text and len(pieces) == 4
        assert sum(count_words(p) for p in pieces) == count_words(text)


def test_signals_by_segment_sees_a_text_degrade_toward_its_end():
    text = VARIED + " " + SENTENCE * 4
    by_seg = signals_by_segment(text, 2, "en")
    assert len(by_seg) == 2 and "ending" not in by_seg[0]
    assert by_seg[0]["repeated_ngram_rate"] == 0.0 < by_seg[1]["repeated_ngram_rate"]
    assert by_seg[0]["distinct_2"] > by_seg[1]["distinct_2"]
    assert signals_by_segment("", 4) == []
    # the whole text's language: a piece of English in a Chinese text keeps zh units
    assert signals_by_segment("中文 a b c", 2)[1]["distinct_2"] is None  # "a b c" is one zh unit
    assert text_signals("a b c")["distinct_2"] == 2 / 2  # as English: ab bc


def test_aggregate_on_a_small_set():
    out = aggregate(["a b a b a", "a b c", ""], ["en", "en", "en"], ["stop", "length", None])
    assert out["distinct_2"] == pytest.approx((2 / 4 + 2 / 2) / 2)  # the empty text has none
    assert out["distinct_3"] == pytest.approx((2 / 3 + 1 / 1) / 2)
    assert out["distinct_4"] == 1.0 and out["repeated_ngram_rate"] is None
    assert out["words"] == pytest.approx(8 / 3)
    assert (out["texts"], out["ended_eos"], out["ended_cap"], out["ended_unknown"]) == (3, 1, 1, 1)
    assert out["ended_stop_string"] == out["ended_no_room"] == 0 and out["cap_rate"] == pytest.approx(1 / 3)
    assert list(out) == list(aggregate([]))  # stable keys
    assert all(v is None or isinstance(v, float) for v in out.values())


def test_aggregate_by_segment():
    out = aggregate_by_segment(["a b a b", "c d", "x"], 2)
    assert list(out) == [f"{name}_seg{i}" for i in (1, 2) for name in SIGNALS]
    assert out["words_seg1"] == pytest.approx((2 + 1 + 1) / 3)
    assert out["words_seg2"] == pytest.approx((2 + 1) / 2)  # "x" has one segment only
    assert out["distinct_2_seg1"] == 1.0  # "a b ": ab; "c ", "x" have no bigram
    assert aggregate_by_segment([], 2)["words_seg2"] is None


def test_worse_by_picks_the_degenerate_signal():
    before = {"distinct_2": 0.9, "repeated_ngram_rate": 0.0, "compression_ratio": 0.5, "words": 900.0,
              "cap_rate": 0.1, "distinct_2_seg4": 0.8, "texts": 10.0}
    after = {"distinct_2": 0.7, "repeated_ngram_rate": 0.0, "compression_ratio": 0.49, "words": 300.0,
             "cap_rate": 0.05, "distinct_2_seg4": 0.9, "texts": 10.0}
    assert worse_by(before, after, 0.05) == [("distinct_2", 0.9, 0.7)]  # compression within margin
    assert worse_by(before, after, 0.0) == [("distinct_2", 0.9, 0.7), ("compression_ratio", 0.5, 0.49)]
    assert worse_by(after, before, 0.05) == [("cap_rate", 0.05, 0.1), ("distinct_2_seg4", 0.9, 0.8)]
    rise = worse_by({"repeated_ngram_rate": 0.0}, {"repeated_ngram_rate": 0.01}, 0.5)
    assert rise == [("repeated_ngram_rate", 0.0, 0.01)]  # from 0, any rise
    assert worse_by({"distinct_3_seg2": 0.8, "x": None}, {"distinct_3_seg2": 0.5}, 0.1) == [
        ("distinct_3_seg2", 0.8, 0.5)]


# a purpose-built set, scored through the public functions: how a reader would rank it
PADDED_LIST = "Tips for the harbour:\n" + "".join(
    f"{i}. Remember to check the weather before you go out on the water.\n" for i in range(1, 9))
CUT_VARIED = VARIED[: VARIED.index("Tourists")] + "Tourists arrived with cameras, asking about"  # no final stop
CUT_LOOP = LOOP + "The harbour woke slowly that"


def test_a_reader_ranks_a_varied_padded_repeated_and_truncated_set():
    texts = {"varied": (VARIED, "stop"), "list": (PADDED_LIST, "stop"), "repeated": (LOOP, "stop"),
             "cut varied": (CUT_VARIED, "length"), "cut loop": (CUT_LOOP, "max_tokens")}
    got = {name: text_signals(text, "en", finish) for name, (text, finish) in texts.items()}
    for key in ("distinct_2", "distinct_3", "distinct_4"):  # varied best, the padded list between, the loop worst
        assert got["varied"][key] > got["list"][key] > got["repeated"][key], key
        assert min(got, key=lambda name: got[name][key]) in ("repeated", "cut loop"), key
    assert got["varied"]["repeated_ngram_rate"] == 0 < got["list"]["repeated_ngram_rate"]
    assert max(got, key=lambda name: got[name]["repeated_ngram_rate"]) in ("repeated", "cut loop")
    assert got["repeated"]["compression_ratio"] < got["list"]["compression_ratio"] < got["varied"]["compression_ratio"]
    # truncated: cut at the token cap, and their text ends mid-sentence
    assert [name for name, s in got.items() if s["ending"] == "cap"] == ["cut varied", "cut loop"]
    assert all(not texts[name][0].rstrip().endswith(".") for name in ("cut varied", "cut loop"))
    assert {got[name]["ending"] for name in ("varied", "list", "repeated")} == {"eos"}
    whole = aggregate([t for t, _ in texts.values()], ["en"] * 5, [f for _, f in texts.values()])
    assert whole["cap_rate"] == 2 / 5 and whole["ended_cap"] == 2 and whole["ended_eos"] == 3
    # the set's worst member pulls its mean down: without the loops the set reads better
    clean = aggregate([VARIED, PADDED_LIST], ["en"] * 2)
    assert worse_by(clean, whole, 0.05) and {key for key, _, _ in worse_by(clean, whole, 0.05)} >= {
        "distinct_3", "repeated_ngram_rate", "compression_ratio", "cap_rate"}


def test_segment_series_reads_the_per_segment_means_back_in_order():
    by_seg = aggregate_by_segment([VARIED, LOOP], 3, ["en", "en"])
    assert segment_series(by_seg, "distinct_3") == [by_seg[f"distinct_3_seg{i}"] for i in (1, 2, 3)]
    assert segment_series({**aggregate([VARIED]), **by_seg}, "words") == [by_seg[f"words_seg{i}"] for i in (1, 2, 3)]
    assert segment_series(aggregate([VARIED]), "distinct_3") == []  # a set-level dict has no segments
