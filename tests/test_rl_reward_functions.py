"""The rewards as TRL calls them (training/grpo.py): dataset columns as keyword arguments,
conversational completions, token ids whose last one says whether the answer ended; and
rl.rewards.aggregation=multiply, their product as TRL's one weighted reward."""
import pytest
from pydantic import ValidationError

from selflengthen.config.rl import Rewards
from selflengthen.training import grpo

RCFG = {"ceiling_factor": 2.0, "loop_floor": 0.3, "quality_model": None}
EOS = 2


def call(names, completions, ids, **columns):
    metrics = {}
    funcs = grpo.reward_functions(names, RCFG, {EOS})
    out = {f.__name__: f(prompts=[None] * len(completions), completions=completions, completion_ids=ids,
                         log_metric=metrics.__setitem__, **columns) for f in funcs}
    return out, metrics


def test_trl_reward_functions_read_columns_endings_and_chat_completions():
    texts = ["one two three four", "a b c d e f g h i j k l", ("w " * 40).strip()]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    ids = [[5, 6, EOS], [5, 6, 7], [5, EOS]]
    out, metrics = call(["length", "termination", "repetition"], completions, ids,
                        lower=[4.0, 6.0, 10.0], upper=[8.0, 8.0, 20.0], language=["en", "en", "en"])
    assert out["length"] == [1.0, 0.5, 0.0]  # inside; 12 words halfway to the ceiling 16; 40 at/over 2 x 20
    assert out["termination"] == [1.0, 0.0, 1.0]  # the second was cut (no end-of-turn id last)
    assert out["repetition"][0] == 1.0 and out["repetition"][2] < 0.1  # "w w w ..." repeats every 10-gram
    assert metrics["words/mean"] == (4 + 12 + 40) / 3 and metrics["termination/rate"] == 2 / 3
    assert metrics["words/in_window"] == 1 / 3


def test_names_and_quality_model_pass_through():
    funcs = grpo.reward_functions(["length", "quality"], {**RCFG, "quality_model": "/models/rm"}, {EOS})
    assert funcs[0].__name__ == "length" and funcs[1] == "/models/rm"  # TRL loads a folder as a reward model
    logged, weights = grpo.always_logged({"rewards": ["length"]} | RCFG, {EOS})
    assert [f.__name__ for f in logged] == ["termination", "repetition"] and weights == [0.0, 0.0]


def test_steps_log_keeps_the_last_line_of_each_step(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n{"step": 2, "loss": 3}\n')
    assert grpo.read_steps(path) == [{"step": 1, "loss": 1}, {"step": 2, "loss": 3}]
    assert grpo.generated_tokens([{"completions/mean_length": 10.0}, {"completions/mean_length": 20.0}], 4) == 120


def test_multiply_gives_trl_one_product_reward_and_logs_the_components_at_weight_0():
    rcfg = {**RCFG, "rewards": ["length", "termination"], "reward_weights": {"length": 1.0, "termination": 1.0},
            "multi_objective_aggregation": "multiply"}
    funcs, weights, aggregation = grpo.trl_rewards(rcfg, {EOS})
    assert [f.__name__ for f in funcs] == ["product", "length", "termination", "repetition"]
    assert weights == [1.0, 0.0, 0.0, 0.0] and aggregation == "normalize_then_sum"
    texts = ["one two three four", "one two three four", "one two"]
    metrics = {}
    product = funcs[0](prompts=[None] * 3, completions=texts, completion_ids=[[5, EOS], [5, 6], [EOS]],
                       lower=[4.0] * 3, upper=[8.0] * 3, language=["en"] * 3, log_metric=metrics.__setitem__)
    assert product == [1.0, 0.0, 0.5]  # inside and ended; cut; half the window's floor, ended
    assert metrics == {}  # the components at weight 0 log the metrics, once
    funcs, weights, aggregation = grpo.trl_rewards({**rcfg, "multi_objective_aggregation": "normalize_then_sum"},
                                                   {EOS})
    assert [f.__name__ for f in funcs] == ["length", "termination", "repetition"] and weights == [1.0, 1.0, 0.0]


def test_multiply_refuses_a_quality_model_scored_inside_trl():
    with pytest.raises(ValidationError, match="aggregation=normalize_then_sum"):
        Rewards(use=["length", "quality"], quality="model", quality_model="/models/rm", aggregation="multiply")
    assert Rewards(use=["length", "termination"], aggregation="multiply").aggregation == "multiply"
