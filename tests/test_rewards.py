"""The RL rewards (core/rewards.py) on literal texts: inside, below and above the window, cut
at the cap, looped, Chinese; the windows read from rows; the normalize_then_sum ranking."""
import pytest

from selflengthen.core import rewards
from selflengthen.core.errors import UserError
from selflengthen.core.lengths import prompt_window
from selflengthen.core.signals import repetition, text_signals

VARIED = ("The harbour woke before dawn. Fishermen hauled crates of silver mackerel onto the quay while gulls "
          "argued overhead. A baker opened her shutters and the smell of warm rye drifted toward the boats. "
          "Children raced past the chandlery, late for school, shouting about a seal they had seen near the "
          "breakwater yesterday evening. By seven the tide had turned.")
LOOP_UNIT = "The harbour woke before dawn and the boats came home. "


def words(text):
    return len(text.split())


def test_length_reward_inside_below_above():
    assert rewards.length_reward(50, 40, 60) == 1.0
    assert rewards.length_reward(40, 40, 60) == 1.0 and rewards.length_reward(60, 40, 60) == 1.0
    assert rewards.length_reward(20, 40, 60) == 0.5  # len / lo below
    assert rewards.length_reward(90, 40, 60) == 0.5  # halfway from up=60 to the ceiling 120
    assert rewards.length_reward(120, 40, 60) == 0.0 and rewards.length_reward(500, 40, 60) == 0.0
    assert rewards.length_reward(75, 40, 60, ceiling_factor=1.5) == pytest.approx(0.5)


def test_length_reward_of_answers_in_english_and_chinese():
    assert rewards.answer_length_reward(VARIED, (40, 70)) == 1.0
    assert rewards.answer_length_reward(VARIED, (120, 200)) == pytest.approx(words(VARIED) / 120)
    chinese = "海港在黎明前醒来。渔民把一箱箱鲭鱼搬上码头。"  # 22 words: every CJK character and mark counts
    assert rewards.answer_length_reward(chinese, (20, 30)) == 1.0
    assert rewards.answer_length_reward(chinese, (44, 60)) == pytest.approx(0.5)


def test_termination_reward():
    assert rewards.termination_reward(True) == 1.0
    assert rewards.termination_reward(False) == 0.0


def test_repetition_reward_punishes_loops_and_keeps_prose():
    assert rewards.repetition_reward(VARIED, "en") == 1.0
    looped = LOOP_UNIT * 8
    assert rewards.repetition_reward(looped, "en") < 0.2
    assert rewards.repetition_reward(":'" * 900, "en") < 0.5  # one whitespace token: only the window sees it
    assert rewards.repetition_reward("", "en") == 0.0
    zh_loop = "我们今天去公园散步看花。" * 12
    assert rewards.repetition_reward(zh_loop, "zh") < 0.2
    assert rewards.repetition_reward("海港在黎明前醒来。渔民把一箱箱鲭鱼搬上码头，面包师打开了窗。", "zh") == 1.0


def test_evaluation_and_reward_share_one_repetition_measure():
    looped = LOOP_UNIT * 8
    assert text_signals(looped, "en")["repeated_ngram_rate"] == repetition(looped, "en")["repeated_ngram_rate"] > 0.5
    assert repetition(VARIED, "en") == {"repeated_ngram_rate": 0.0,
                                        "window_compression": repetition(VARIED, "en")["window_compression"]}
    assert repetition(VARIED, "en")["window_compression"] > 0.5 > repetition(looped * 4, "en")["window_compression"]


@pytest.mark.parametrize("prompt, window", [
    ("Write about the json module in about 50 words.", (40, 60)),
    ("Explain Python 3's walrus operator in roughly 200 words.", (160, 240)),
    ("Write 300-400 words on tides.", (300, 400)),
    ("Write between 300 and 400 words on tides.", (300, 400)),
    ("Describe the market in more than 300 words.", (300, 450)),
    ("Describe the market in no more than 300 words.", (150, 300)),
    ("Write a 500-word essay on rain.", (400, 600)),
    ("Write 300 words or more about rain.", (300, 450)),
    ("写一篇大约3000字的文章，介绍长江。", (2400, 3600)),
    ("写一篇3000字左右的游记。", (2400, 3600)),
    ("请写3000字至4000字的报告。", (3000, 4000)),
    ("介绍西湖，不超过五百字。", (250, 500)),
    ("写一篇大于两千字的小说。", (2000, 3000)),
])
def test_prompt_windows(prompt, window):
    assert prompt_window(prompt) == pytest.approx(window)


def test_row_windows_in_order_of_precedence():
    assert rewards.row_window({"query": "写一篇文章", "constraint": "大约3000字", "type": "about"}) == (2400, 3600)
    assert rewards.row_window({"prompt": "Write about tides in about 50 words.", "lower": 1, "upper": 2}) == (40, 60)
    assert rewards.row_window({"prompt": "Write about tides.", "lower": 100, "upper": 200}) == (100, 200)
    assert rewards.row_window({"prompt": "Write about tides.", "length": 100}) == pytest.approx((80, 120))
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell me of tides in 100-120 words."}]
    assert rewards.row_window({"prompt": chat}) == (100, 120)
    assert rewards.row_window({"prompt": "Write about tides."}) is None
    assert rewards.row_window({"prompt": "Write about tides.", "lower": 300, "upper": 200}) is None


def test_a_row_without_a_length_is_refused_in_one_line_naming_it():
    rows = [{"prompt": "Write 100 words on tides."}, {"prompt": "Write a poem about the moon."}]
    with pytest.raises(UserError) as err:
        rewards.windows_or_refuse(rows, "prompts.jsonl")
    message = str(err.value)
    assert "\n" not in message and "row 2" in message and "poem about the moon" in message
    assert "'lower' and 'upper'" in message and "大约3000字" in message


def test_group_normalised_matches_trls_rule():
    normed = rewards.group_normalised([1.0, 0.0, 1.0, 0.0])
    std = (4 * 0.25 / 3) ** 0.5
    assert normed == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 2)
    assert rewards.group_normalised([0.3, 0.3]) == [0.0, 0.0]


def test_a_looped_or_padded_answer_ranks_below_a_varied_one_of_the_same_length():
    window = (40, 80)
    n = words(VARIED)
    looped = " ".join((LOOP_UNIT * 10).split()[:n])
    padded = " ".join(VARIED.split()[:20] + ["very"] * (n - 20))
    short = " ".join(VARIED.split()[:15]) + "."
    group = [VARIED, looped, padded, short]
    assert [words(t) for t in group[:3]] == [n, n, n]
    scores = {"length": [rewards.answer_length_reward(t, window) for t in group],
              "termination": [1.0, 1.0, 1.0, 1.0],
              "repetition": [rewards.repetition_reward(t, "en") for t in group]}
    length_only = rewards.advantages({"length": scores["length"]}, {"length": 1.0}, group_size=4)
    assert length_only[0] == pytest.approx(length_only[1]) == pytest.approx(length_only[2])  # length alone is fooled
    combined = rewards.advantages(scores, {"length": 1.0, "termination": 1.0, "repetition": 1.0}, group_size=4)
    assert combined[0] > combined[1] and combined[0] > combined[2]


def test_multiplied_weights_are_exponents_and_unscored_rewards_are_left_out():
    assert rewards.multiplied([1.0, 0.0, 1.0], [1.0, 1.0, 1.0]) == 0.0  # cut at the cap: nothing for the length
    assert rewards.multiplied([0.5, 1.0, 0.8], [1.0, 1.0, 1.0]) == pytest.approx(0.4)
    assert rewards.multiplied([0.5, 1.0, 0.8], [2.0, 1.0, 0.0]) == pytest.approx(0.25)  # weight 0: left out
    assert rewards.multiplied([0.5, None], [1.0, 1.0]) == 0.5 and rewards.multiplied([None], [1.0]) is None


def test_under_multiply_a_cut_or_looped_answer_ranks_below_a_shorter_clean_one():
    window = (40, 80)
    n = words(VARIED)
    looped = " ".join((LOOP_UNIT * 10).split()[:n])
    short = " ".join(VARIED.split()[:30]) + "."  # 31 words: below the window, ended on its own
    group = [VARIED, VARIED, looped, short]  # the second VARIED was cut at the cap
    scores = {"length": [rewards.answer_length_reward(t, window) for t in group],
              "termination": [1.0, 0.0, 1.0, 1.0],
              "repetition": [rewards.repetition_reward(t, "en") for t in group]}
    weights = {"length": 1.0, "termination": 1.0, "repetition": 1.0}
    multiplied = rewards.advantages(scores, weights, group_size=4, aggregation="multiply")
    assert multiplied[0] > multiplied[3] > multiplied[1] == multiplied[2]  # cut and looped both earn 0
    summed = rewards.advantages(scores, weights, group_size=4)
    assert summed[1] > summed[2]  # summed, the cut answer keeps its full length reward
