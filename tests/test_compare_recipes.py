"""scripts/compare_recipes.py on literal evaluation folders: an item's answers are averaged
before pairing (samples=N), the paired changes and their standard errors are the hand-computed
ones, a cut answer counts in the cap-rate change, and a training manifest gives the budget."""
import json

import pytest

from tests.conftest import script_module

compare = script_module("compare_recipes")


def folder(tmp_path, name, rows):
    out = tmp_path / name
    out.mkdir()
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "summary.json").write_text("{}", encoding="utf-8")
    return out


def answer(item, j, score, words, finish="stop"):
    return {"id": item if j == 0 else f"{item}~{j}", "item": item, "length_score": score, "words": words,
            "finish_reason": finish, "response": " ".join(f"w{k}" for k in range(words)), "language": "en",
            "completion_tokens": words}


def test_answers_are_averaged_per_item_then_paired(tmp_path):
    base = folder(tmp_path, "base", [answer("a", 0, 0.2, 10), answer("a", 1, 0.4, 20),
                                     answer("b", 0, 0.5, 30), answer("b", 1, 0.5, 30),
                                     answer("c", 0, 0.1, 5), answer("c", 1, 0.3, 15)])
    rl = folder(tmp_path, "rl", [answer("a", 0, 0.6, 40), answer("a", 1, 0.8, 40, "length"),
                                 answer("b", 0, 0.6, 30), answer("b", 1, 0.6, 30),
                                 answer("c", 0, 0.4, 20), answer("c", 1, 0.4, 20)])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"seconds": 600, "generation": {"generated_tokens": 1234}}), encoding="utf-8")
    row = compare.row_of("rl", compare.answers(rl), compare.answers(base), manifest)
    # per item S_l (x100): base 30, 50, 20; rl 70, 60, 40; changes 40, 10, 20: mean 23.3, sd 15.28, se 8.8
    assert row["S_l change (se)"] == "+23.3 (8.8), 3 items"
    assert row["cap rate change (se)"] == "+0.167 (0.167)"  # item a: half its answers cut
    assert row["training tokens"] == 1234 and row["training wall min"] == 10.0
    assert row["S_l"] == pytest.approx(100 * (0.6 + 0.8 + 0.6 + 0.6 + 0.4 + 0.4) / 6)


def test_a_dpo_job_folder_gives_its_samples_tokens_and_its_steps_seconds(tmp_path):
    job = tmp_path / "dpo-job"
    job.mkdir()
    for step, seconds in (("samples", 900.5), ("pairs", 0.5), ("train", 1200.0)):
        extra = {"generated_tokens": 4321} if step == "samples" else {}
        (job / f"{step}.manifest.json").write_text(json.dumps({"seconds": seconds, **extra}), encoding="utf-8")
    assert compare.budget(job) == (4321, 2101.0)
    older = json.loads((job / "samples.manifest.json").read_text())
    del older["generated_tokens"]  # a job from before the manifest counted them: summed from its samples
    (job / "samples.manifest.json").write_text(json.dumps(older), encoding="utf-8")
    (job / "samples.jsonl").write_text("".join(json.dumps({"completion_tokens": n}) + "\n" for n in (10, 32)),
                                       encoding="utf-8")
    assert compare.budget(job) == (42, 2101.0)


def test_the_table_by_length_asked_gives_each_recipes_words_score_and_cuts(tmp_path):
    def asked(row, length):
        return {**row, "length": length}

    base = folder(tmp_path, "base", [asked(answer("a", 0, 0.2, 10), 100), asked(answer("a", 1, 0.4, 20), 100),
                                     asked(answer("b", 0, 0.5, 30), 500)])
    dpo = folder(tmp_path, "dpo", [asked(answer("a", 0, 0.6, 40), 100), asked(answer("a", 1, 0.8, 60, "length"), 100),
                                   asked(answer("b", 0, 0.9, 50), 500)])
    table = compare.by_length([("base", compare.answers(base)), ("dpo", compare.answers(dpo))])
    assert [r["words asked"] for r in table] == [100, 500] and [r["answers"] for r in table] == [2, 1]
    assert table[0]["base words"] == 15 and table[0]["dpo words"] == 50
    assert table[0]["base S_l"] == pytest.approx(30) and table[0]["dpo S_l"] == pytest.approx(70)
    assert (table[0]["base cut"], table[0]["dpo cut"], table[1]["dpo cut"]) == (0, 1, 0)
    assert "| words asked | answers | base words |" in compare.markdown(table)


def test_two_evaluations_of_a_recipe_pool_their_answers_per_item(tmp_path):
    base0 = folder(tmp_path, "base0", [answer("a", 0, 0.2, 10), answer("b", 0, 0.5, 30)])
    base1 = folder(tmp_path, "base1", [answer("a", 0, 0.4, 10), answer("b", 0, 0.5, 30)])
    rl0 = folder(tmp_path, "rl0", [answer("a", 0, 0.6, 40), answer("b", 0, 0.6, 30)])
    rl1 = folder(tmp_path, "rl1", [answer("a", 0, 0.8, 40, "length"), answer("b", 0, 0.8, 30)])
    base = compare.pooled(f"{base0}+{base1}")
    assert len(base) == 4  # the same ids from two folders are kept apart
    row = compare.row_of("rl", compare.pooled(f"{rl0}+{rl1}"), base, None)
    # per item S_l (x100): base 30, 50; rl 70, 70; changes 40, 20: mean 30, sd 14.14, se 10.0
    assert row["S_l change (se)"] == "+30.0 (10.0), 2 items"
    assert row["cap rate change (se)"] == "+0.250 (0.250)"
    assert compare.pooled(str(rl0)) == compare.answers(rl0)


def test_a_run_folder_gives_its_iterations_generated_tokens_and_stage_seconds(tmp_path):
    run = tmp_path / "run"
    for k, (tokens, seconds) in enumerate([(1000, {"generate": 30.0, "train": 60.0}), (500, {"extend": 30.0})], 1):
        (run / f"iter_{k}").mkdir(parents=True)
        (run / f"iter_{k}" / "metrics.json").write_text(
            json.dumps({"tokens": {"completion_tokens": tokens}, "seconds": seconds}), encoding="utf-8")
    assert compare.budget(run) == (1500, 120.0)
    assert compare.budget(run / "iter_1") == (1000, 90.0)  # an iteration's generator: iterations 1..K
    assert compare.budget(run / "iter_2") == (1500, 120.0)
