"""Length-constraint drawing (algorithm.md 4): the paper's probabilities over many seeded
draws, literal windows and wording per type and language, Chinese numerals."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selflengthen.config import schema
from selflengthen.finalize.constraints import (TYPES, ConstraintConfig, draw_constraint, from_chinese_numeral,
                                               rounded, to_chinese_numeral)

CONF = Path(__file__).resolve().parent.parent / "conf" / "finalize" / "default.yaml"
N = 10_000


def finalize_conf():
    return OmegaConf.load(CONF)


class Script(random.Random):
    """random() answers from a list: pins each draw (unit, [numerals], type)."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


# u values that pick each option with the default probabilities
UNIT_2000, UNIT_1000 = 0.1, 0.5
TYPE_U = {"about": 0.1, "range": 0.5, "above": 0.7, "below": 0.9}
NUMERALS, ARABIC = 0.1, 0.9


def test_yaml_is_the_paper_default_and_sound():
    cfg = ConstraintConfig.of(schema.Constraints.model_validate(OmegaConf.to_container(finalize_conf().constraints)))
    assert cfg == ConstraintConfig()
    assert cfg.units == (2000, 1000) and cfg.unit_probs == (0.2, 0.8)
    assert cfg.type_probs == {"about": 0.4, "range": 0.25, "above": 0.1, "below": 0.25}


def test_config_problems_are_collected():
    bad = {"finalize": {"constraints": {"min_words": 800, "max_words": 100,
                                        "units": [{"words": 2000, "prob": 0.5}, {"words": 1000, "prob": 0.2}],
                                        "type_probs": {"about": 1.0}, "zh_numeral_prob": 2}}}
    found = [line for line in schema.problems(bad) if line.startswith("finalize.")]
    assert found == ["finalize.constraints.zh_numeral_prob=2 must be <= 1 (e.g. finalize.constraints.zh_numeral_prob=0.5)"]
    del bad["finalize"]["constraints"]["zh_numeral_prob"]
    found = [line for line in schema.problems(bad) if line.startswith("finalize.")]
    assert found == ["finalize.constraints.min_words (800) must be below max_words (100); finalize.constraints.units "
                     "probabilities sum to 0.7; make them sum to 1; finalize.constraints.type_probs (about, range, "
                     "above, below) sum to 1.6; make them sum to 1"]


def test_probabilities_over_seeded_draws():
    cfg = ConstraintConfig()
    rng = random.Random(1234)
    en = [draw_constraint(rng.randrange(2000, 8000), "en", rng, cfg) for _ in range(N)]
    zh = [draw_constraint(rng.randrange(2000, 8000), "zh", rng, cfg) for _ in range(N)]
    units = Counter(c.unit for c in en + zh)
    types = Counter(c.type for c in en + zh)
    numerals = sum(c.chinese_numerals for c in zh) / N
    assert abs(units[2000] / (2 * N) - 0.2) < 0.02 and abs(units[1000] / (2 * N) - 0.8) < 0.02
    for t, p in cfg.type_probs.items():
        assert abs(types[t] / (2 * N) - p) < 0.02, (t, types[t] / (2 * N))
    assert abs(numerals - 0.5) < 0.02
    assert not any(c.chinese_numerals for c in en)
    # the same seed gives the same draws
    again = random.Random(1234)
    assert [draw_constraint(again.randrange(2000, 8000), "en", again, cfg) for _ in range(N)] == en


def test_bounds_hold_for_every_draw():
    cfg = ConstraintConfig()
    rng = random.Random(7)
    for _ in range(N):
        words = rng.randrange(2000, 8000)
        c = draw_constraint(words, "en", rng, cfg)
        near, low, high = rounded(words, c.unit, 2000, 8000)
        assert 2000 <= low <= words < high <= 8000 and 2000 <= near <= 8000
        assert near % c.unit == 0 or near in (2000, 8000)
        # what the text says is true of the response (LonGen's scoring windows for about
        # and above can miss it: "more than 2000 words" for 3443 words scores below 1)
        if c.type == "range":
            assert c.numbers[0] <= words <= c.numbers[1]
        if c.type == "above":
            assert words >= c.numbers[0]
        if c.type == "below":
            assert words < c.numbers[0]


@pytest.mark.parametrize("words, unit, expected", [
    (3400, 1000, (3000, 3000, 4000)),
    (3500, 1000, (4000, 3000, 4000)),   # ties go up
    (2500, 1000, (3000, 2000, 3000)),
    (3400, 2000, (4000, 2000, 4000)),
    (4000, 1000, (4000, 4000, 5000)),   # exact multiple: high one unit above
    (4000, 2000, (4000, 4000, 6000)),
    (2000, 1000, (2000, 2000, 3000)),
    (7600, 2000, (8000, 6000, 8000)),
    (7999, 1000, (8000, 7000, 8000)),
    (2100, 2000, (2000, 2000, 4000)),
])
def test_rounding_literal(words, unit, expected):
    assert rounded(words, unit, 2000, 8000) == expected


def test_scaled_bounds_for_short_texts():
    cfg = ConstraintConfig(min_words=100, max_words=800, units=(200, 100), unit_probs=(0.2, 0.8))
    assert rounded(150, 200, 100, 800) == (200, 100, 200)   # floor 0 clipped up to min
    assert rounded(790, 200, 100, 800) == (800, 600, 800)
    c = draw_constraint(340, "en", Script([UNIT_1000, TYPE_U["range"]]), cfg)
    assert (c.unit, c.text, c.window) == (100, "300-400 words", (300.0, 400.0))
    c = draw_constraint(340, "zh", Script([UNIT_1000, NUMERALS, TYPE_U["about"]]), cfg)
    assert c.text == "大约三百字"


@pytest.mark.parametrize("kind, text, numbers, window", [
    ("about", "around 3000 words", (3000,), (2400.0, 3600.0)),
    ("range", "3000-4000 words", (3000, 4000), (3000.0, 4000.0)),
    ("above", "more than 3000 words", (3000,), (3000.0, 4500.0)),
    ("below", "less than 4000 words", (4000,), (2000.0, 4000.0)),
])
def test_english_wording_and_windows(kind, text, numbers, window):
    c = draw_constraint(3400, "en", Script([UNIT_1000, TYPE_U[kind]]), ConstraintConfig())
    assert (c.type, c.text, c.numbers, c.window) == (kind, text, numbers, window)


@pytest.mark.parametrize("kind, arabic, chinese", [
    ("about", "大约3000字", "大约三千字"),
    ("range", "3000字至4000字", "三千字至四千字"),
    ("above", "大于3000字", "大于三千字"),      # more than the lower bound (the reference swaps these)
    ("below", "小于4000字", "小于四千字"),      # less than the upper bound
])
def test_chinese_wording(kind, arabic, chinese):
    cfg = ConstraintConfig()
    assert draw_constraint(3400, "zh", Script([UNIT_1000, ARABIC, TYPE_U[kind]]), cfg).text == arabic
    c = draw_constraint(3400, "zh", Script([UNIT_1000, NUMERALS, TYPE_U[kind]]), cfg)
    assert c.text == chinese and c.chinese_numerals


def test_types_cover_every_form():
    assert set(TYPES) == {"about", "range", "above", "below"}


@pytest.mark.parametrize("n, text", [
    (0, "零"), (2, "二"), (10, "十"), (15, "十五"), (20, "二十"), (22, "二十二"), (100, "一百"), (110, "一百一十"),
    (200, "两百"), (250, "两百五十"), (1005, "一千零五"), (1200, "一千二百"), (2000, "两千"), (3500, "三千五百"),
    (4000, "四千"), (8000, "八千"), (10000, "一万"), (10010, "一万零一十"), (12000, "一万两千"), (20000, "两万"),
    (22000, "两万两千"), (30500, "三万零五百"), (99999, "九万九千九百九十九"), (100000, "十万"), (200000, "二十万"),
    (120000000, "一亿两千万"),
])
def test_chinese_numerals_literal(n, text):
    assert to_chinese_numeral(n) == text
    assert from_chinese_numeral(text) == n


def test_chinese_numerals_round_trip_and_variants():
    assert all(from_chinese_numeral(to_chinese_numeral(n)) == n for n in range(100_000))
    assert from_chinese_numeral("二千") == 2000 and from_chinese_numeral("两千五百") == 2500
    assert from_chinese_numeral("千万") is None and from_chinese_numeral("三千字") is None
    with pytest.raises(ValueError):
        to_chinese_numeral(-1)
