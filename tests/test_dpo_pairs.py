"""DPO's pure parts: pair building and margin summaries on literal scored samples, the
score of a sample, the preference rows TRL gets, and the `dpo` config's checks."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from selflengthen import preflight
from selflengthen.commands import dpo as command
from selflengthen.training.dpo import to_preference
from selflengthen.training.dpo_pairs import build_pairs, margin_summary, no_pairs_message, penalised
from tests.conftest import REPO
from tests.fakes import typed


def sample(item: str, index: int, score: float | None, response: str | None = None) -> dict:
    return {"item": item, "index": index, "prompt": f"Write about {item}.", "score": score,
            "response": response if response is not None else f"{item} answer {index}"}


SAMPLES = [
    sample("a", 0, 40.0), sample("a", 1, 90.0), sample("a", 2, 65.0),
    sample("b", 0, 70.0), sample("b", 1, 71.0), sample("b", 2, 70.5),  # spread 1: below a margin of 10
    sample("c", 0, None), sample("c", 1, 50.0),  # one scored sample: no pair
]


def test_best_vs_worst_pairs_the_extremes_of_each_instruction_above_the_margin():
    pairs = build_pairs(SAMPLES, min_margin=10, pairing="best_vs_worst")
    assert [(p["item"], p["chosen_index"], p["rejected_index"]) for p in pairs] == [("a", 1, 0)]
    (p,) = pairs
    assert (p["chosen"], p["rejected"]) == ("a answer 1", "a answer 0")
    assert (p["chosen_score"], p["rejected_score"], p["margin"]) == (90.0, 40.0, 50.0)
    assert p["prompt"] == "Write about a."


def test_the_margin_is_inclusive_and_a_zero_margin_never_pairs():
    assert [p["item"] for p in build_pairs(SAMPLES, min_margin=1.0)] == ["a", "b"]
    assert [p["item"] for p in build_pairs(SAMPLES, min_margin=1.01)] == ["a"]
    same = [sample("x", 0, 60.0), sample("x", 1, 60.0)]
    assert build_pairs(same, min_margin=0) == []


def test_all_pairing_gives_every_ordered_combination_with_distinct_scores():
    pairs = build_pairs(SAMPLES, min_margin=0.4, pairing="all")
    got = sorted((p["item"], p["chosen_index"], p["rejected_index"]) for p in pairs)
    assert got == [("a", 1, 0), ("a", 1, 2), ("a", 2, 0), ("b", 1, 0), ("b", 1, 2), ("b", 2, 0)]
    assert all(p["margin"] == p["chosen_score"] - p["rejected_score"] > 0 for p in pairs)
    assert {p["margin"] for p in pairs if p["item"] == "a"} == {50.0, 25.0}
    with pytest.raises(ValueError, match="pairing"):
        build_pairs(SAMPLES, 0, pairing="random")


def test_ties_break_deterministically_and_identical_texts_are_not_paired():
    tied = [sample("t", 0, 80.0), sample("t", 1, 80.0), sample("t", 2, 20.0), sample("t", 3, 20.0)]
    (p,) = build_pairs(tied, min_margin=5)
    assert (p["chosen_index"], p["rejected_index"]) == (0, 3)  # earliest best, latest worst
    twins = [sample("w", 0, 90.0, "same text"), sample("w", 1, 10.0, "same text")]
    assert build_pairs(twins, min_margin=5) == []


def test_margin_summary_counts_what_was_seen_and_kept():
    pairs = build_pairs(SAMPLES, min_margin=10)
    s = margin_summary(SAMPLES, pairs, 10, "best_vs_worst")
    assert (s["instructions"], s["samples"], s["unscored_samples"]) == (3, 8, 1)
    assert (s["instructions_with_2_scored"], s["instructions_with_pairs"], s["pairs"]) == (2, 1, 1)
    assert s["spread"] == {"min": 1.0, "median": 25.5, "mean": 25.5, "max": 50.0}
    assert s["margin"]["min"] == s["margin"]["max"] == 50.0
    assert (s["chosen_score"]["mean"], s["rejected_score"]["mean"]) == (90.0, 40.0)


def test_no_pairs_message_names_the_counts_the_margins_and_the_setting():
    summary = margin_summary(SAMPLES, [], 60, "best_vs_worst")
    msg = no_pairs_message(summary)
    assert "dpo.min_margin=60" in msg and "3 instructions" in msg
    assert "min 1.0" in msg and "max 50.0" in msg and "dpo.min_margin=25.0" in msg
    flat = [sample("x", 0, 60.0), sample("x", 1, 60.0)]
    assert "scored the same" in no_pairs_message(margin_summary(flat, [], 0, "best_vs_worst"))
    lonely = [sample("x", 0, 60.0), sample("y", 0, None)]
    assert "no instruction of 2 has 2 scored samples" in no_pairs_message(margin_summary(lonely, [], 0, "all"))


def test_score_is_the_mean_of_length_and_quality_when_judged_else_the_length_score():
    row = {"length_score": 80.0, "quality": 50.0}
    assert command.score_of(row, judged=True) == 65.0
    assert command.score_of(row, judged=False) == 80.0
    assert command.score_of({"length_score": 80.0, "quality": None}, judged=True) is None  # unparsable judge


def test_a_pair_becomes_a_conversational_preference_row():
    (p,) = build_pairs(SAMPLES, min_margin=10)
    assert to_preference(p) == {"prompt": [{"role": "user", "content": "Write about a."}],
                                "chosen": [{"role": "assistant", "content": "a answer 1"}],
                                "rejected": [{"role": "assistant", "content": "a answer 0"}]}


def _dpo_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="dpo", overrides=list(overrides))


def problems(cfg) -> list[str]:
    return preflight.problems(cfg, command.CONFIG_CHECK, verb="dpo")


def test_the_dpo_config_composes_and_its_bad_values_are_all_reported():
    cfg = _dpo_cfg()
    assert problems(cfg) == []
    assert cfg.dpo.train.max_length == cfg.model.max_model_len
    merged = command.train_settings(typed(cfg, "dpo"))
    assert merged["rank"] == cfg.train.rank and merged["learning_rate"] == cfg.dpo.train.learning_rate
    bad = problems(_dpo_cfg("benchmark=longen", "dpo.samples_per_instruction=1", "dpo.min_margin=-1",
                                    "dpo.pairing=random", "dpo.train.beta=0", "dpo.train.max_steps=0"))
    assert len(bad) == 6
    for key in ("benchmark=longen", "samples_per_instruction", "min_margin", "pairing", "beta", "max_steps"):
        assert any(key in b for b in bad), key


def test_dpo_takes_one_benchmark_not_a_list():
    bad = problems(_dpo_cfg("benchmark=[heldout_tiny,longbench_write]"))
    assert bad == ["benchmark=['heldout_tiny', 'longbench_write'] must be a string (quote it) (e.g. "
                   "benchmark=heldout_tiny)"]


VARIED = ("The harbour wakes before the town does. Fishing boats slide out past the breakwater while gulls argue "
          "over the nets, and the first bakers open their shutters to the smell of salt and warm bread. By seven "
          "the market square fills with crates of mackerel, baskets of lemons and the voices of traders calling "
          "prices across the stones.")
LOOPED = " ".join(["The market is busy and the market is loud."] * 12)


def test_penalties_turn_a_cut_or_looping_best_into_the_rejected_one():
    cut = {**sample("a", 0, 95.0, VARIED + " It went on"), "finish_reason": "length"}
    clean = {**sample("a", 1, 70.0, VARIED), "finish_reason": "stop"}
    looped = {**sample("b", 0, 90.0, LOOPED), "finish_reason": "stop"}
    varied = {**sample("b", 1, 60.0, VARIED), "finish_reason": "stop"}
    samples = [cut, clean, looped, varied]
    raw = build_pairs(samples, min_margin=10)
    assert [(p["item"], p["chosen_index"]) for p in raw] == [("a", 0), ("b", 0)]  # by length alone
    scored = penalised(samples, ["termination", "repetition"])
    assert scored[0]["score"] == 0.0 and scored[0]["unpenalised_score"] == 95.0 and scored[0]["penalty"] == 0.0
    assert scored[1]["score"] == pytest.approx(70.0)  # a varied answer that ended keeps its score
    assert scored[2]["score"] < 40.0  # the looped one falls below the varied one
    pairs = build_pairs(scored, min_margin=10)
    assert [(p["item"], p["chosen_index"], p["rejected_index"]) for p in pairs] == [("a", 1, 0), ("b", 1, 0)]


def test_no_penalties_leave_the_scores_and_an_unscored_sample_stays_unscored():
    samples = [{**sample("a", 0, 50.0), "finish_reason": "length"}, sample("a", 1, None)]
    assert penalised(samples, []) is samples
    scored = penalised(samples, ["termination"])
    assert scored[0]["score"] == 0.0 and scored[1]["score"] is None and "unpenalised_score" not in scored[1]
    only_loops = penalised(samples, ["repetition"])
    assert only_loops[0]["score"] == pytest.approx(50.0)  # cut, but not repeating: termination is not asked


def test_dpo_penalties_default_to_both_and_an_unknown_one_is_refused():
    assert _dpo_cfg().dpo.penalties == ["termination", "repetition"]
    assert problems(_dpo_cfg("dpo.penalties=[]")) == []
    bad = problems(_dpo_cfg("dpo.penalties=[length]"))
    assert len(bad) == 1 and "penalties" in bad[0]
