"""Stage logic with a scripted engine: request shapes, filters, retries, acceptance."""
import random

from selflengthen import prompting
from selflengthen.engines import Sampling
from selflengthen.quality import QualityCheck
from selflengthen.stages.augment import Augmenter
from selflengthen.stages.curate import degrade, sft_records
from selflengthen.stages.extend import ExtendStats, extend_responses
from selflengthen.stages.generate import sample_responses
from selflengthen.text import QualityRules, count_words
from tests.fakes import ScriptedEngine

RULES = {"en": QualityRules(terminal_marks=(".", "!", "?"), ngram=10, meta_words=("response",)),
         "zh": QualityRules(terminal_marks=("。",), ngram=13)}


def test_augment_filters_dedups_and_grows_the_pool():
    answers = iter(["Write about rivers in depth.", "too short", "Write about rivers in depth.",
                    "Write a long history of bridges.", "Write about mountains and the people there."])

    def respond(req, sampling):
        if req.prefix:  # the few-shot list completion
            assert req.prefix.startswith("Instruction 1: ") and req.prefix.endswith("Instruction 3:")
            return " " + next(answers) + "\nInstruction 4: ignored"
        return "no" if "bridges" in req.messages[0]["content"] else "yes"

    engine = ScriptedEngine(respond)
    aug = Augmenter(engine, Sampling(), Sampling(max_tokens=4), min_words=3, max_words=500, tries_per_instruction=10)
    new = aug.augment(["Seed one is here.", "Seed two is here."], wanted=2, language="en", rng=random.Random(0))
    assert new == ["Write about rivers in depth.", "Write about mountains and the people there."]
    s = aug.stats
    assert (s.drawn, s.rejected_words, s.rejected_duplicate, s.rejected_judge, s.accepted) == (5, 1, 1, 1, 2)
    # accepted instructions were drawn as examples in later rounds
    prefixes = [r.prefix for reqs, _ in engine.calls for r in reqs if r.prefix]
    assert any("rivers" in p for p in prefixes[1:])
    assert all("Instruction 4:" in sp.stop for reqs, sp in engine.calls if reqs[0].prefix)


def test_augment_gives_up_after_the_try_budget():
    engine = ScriptedEngine(lambda req, s: "x" if req.prefix else "yes")
    aug = Augmenter(engine, Sampling(), Sampling(), min_words=3, max_words=500, tries_per_instruction=3)
    assert aug.augment(["a b c d", "e f g h"], wanted=4, language="en", rng=random.Random(0)) == []
    assert aug.stats.drawn == 12


def test_generate_retries_until_the_quality_check_passes():
    tries = {}

    def respond(req, sampling):
        key = req.messages[0]["content"]
        tries[key] = tries.get(key, 0) + 1
        return "A fine answer." if tries[key] >= 3 else "broken answer without an end"

    rows = [{"id": "i0", "instruction": "Write X.", "language": "en"}]
    check = QualityCheck(RULES)
    done, first = sample_responses(ScriptedEngine(respond), rows, samples=2, retries=20, sampling=Sampling(),
                                   check=check, rng=random.Random(0), adapter="generator")
    assert [d["id"] for d in done] == ["i0-s0", "i0-s1"]
    assert first == [5, 5] and check.failures == {"unterminated": 2}
    assert [d["tries"] for d in done] == [2, 2]
    engine = ScriptedEngine(lambda r, s: "never ends")
    done, _ = sample_responses(engine, rows, 2, 4, Sampling(), QualityCheck(RULES), random.Random(0), None)
    assert done == [] and len(engine.calls) == 4 and all(r.adapter is None for r in engine.calls[0][0])


def _initial(text):
    return {"id": "i0-s0", "instruction_id": "i0", "instruction": "Write X.", "language": "en", "response": text}


def test_extension_two_stages_prefix_and_acceptance():
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    seen = []

    def respond(req, sampling):
        seen.append(req)
        content = req.messages[0]["content"]
        if not req.prefix:  # stage 1 expands the first half only: 3 paragraphs, the last dropped
            assert "Part 1 says something." in content and "Part 2" not in content
            return "One new detail.\n\nTwo new details.\n\nIn conclusion it ends."
        assert "Part 3 says something." in content  # stage 2 sees the whole current text
        assert req.prefix == "One new detail.\n\nTwo new details.\n\n"
        return "More about the rest of it, in depth.\n\nAnd a little more, with one more example of it."

    stats = ExtendStats()
    rows = extend_responses(ScriptedEngine(respond), [_initial(initial)], attempts=1, retries=5, rounds=1,
                            min_growth=1.2, sampling=Sampling(), check=QualityCheck(RULES), rng=random.Random(0),
                            adapter="extender", stats=stats)
    assert len(rows) == 1 and rows[0]["tries"] == 1
    assert rows[0]["response"].startswith("One new detail.\n\nTwo new details.\n\nMore about the rest")
    assert "In conclusion" not in rows[0]["response"]
    assert rows[0]["words"] == count_words(rows[0]["response"]) and rows[0]["round_words"][0] == 16
    assert all(r.adapter == "extender" for r in seen)


def test_extension_rejects_too_little_growth_and_retries():
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))

    def respond(req, sampling):  # the extension is barely longer: below 1.2x
        return "A.\n\nB.\n\nC." if not req.prefix else "Part two and three and also a bit."

    stats = ExtendStats()
    engine = ScriptedEngine(respond)
    rows = extend_responses(engine, [_initial(initial)], attempts=2, retries=3, rounds=2, min_growth=1.2,
                            sampling=Sampling(), check=QualityCheck(RULES), rng=random.Random(0),
                            adapter=None, stats=stats)
    assert rows == [] and stats.tries == 6 and stats.accepted == 0
    assert len(engine.calls) == 3 * 2 * 2  # tries x rounds x (stage 1 + stage 2), attempts batched together
    assert all(len(reqs) == 2 for reqs, _ in engine.calls)


def test_extension_checkpoint_resumes(tmp_path):
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    long = "\n\n".join(f"Detail {i} is added with care." for i in range(8))
    ckpt = tmp_path / "extend.jsonl"
    engine = ScriptedEngine(lambda req, s: long if not req.prefix else long.replace("Detail", "Fact"))
    kwargs = dict(attempts=2, retries=1, rounds=1, min_growth=1.2, sampling=Sampling(),
                  rng=random.Random(0), adapter=None, checkpoint=ckpt)
    first = extend_responses(engine, [_initial(initial)], check=QualityCheck(RULES), stats=ExtendStats(), **kwargs)
    assert len(first) == 2 and len(ckpt.read_text().splitlines()) == 2
    again = ScriptedEngine(lambda req, s: "unused")
    second = extend_responses(again, [_initial(initial)], check=QualityCheck(RULES), stats=ExtendStats(), **kwargs)
    assert second == first and again.calls == []


def test_sft_records_for_both_roles():
    row = {"id": "x", "instruction": "Write X.", "language": "en", "initial": "l1\nl2\nl3\nl4\nl5\nl6",
           "response": "A much longer answer."}
    gen, ext = sft_records([row], keep_prob=0.8, rng=random.Random(3))
    assert gen[0]["messages"] == [{"role": "user", "content": "Write X."},
                                  {"role": "assistant", "content": "A much longer answer."}]
    assert ext[0]["messages"][-1] == gen[0]["messages"][-1]
    draft = degrade(row["initial"], 0.8, random.Random(3))
    assert ext[0]["messages"][0]["content"] == prompting.extender_request("Write X.", draft, "en")[0]["content"]


def test_degrade_keeps_lines_with_the_given_probability():
    text = "\n".join(f"line {i}" for i in range(2000))
    kept = degrade(text, 0.8, random.Random(0)).split("\n\n")
    assert 0.77 < len(kept) / 2000 < 0.83
    assert kept == sorted(kept, key=lambda s: int(s.split()[1]))  # order preserved
    assert degrade("only", 0.0, random.Random(0)) == "only"  # never empty


def test_generate_checkpoint_resumes_without_redoing_samples(tmp_path):
    rows = [{"id": f"i{n}", "instruction": f"Write {n}.", "language": "en"} for n in range(3)]
    ckpt = tmp_path / "generate.jsonl"

    def flaky(req, s):  # instruction 2 never passes: it keeps the stage from finishing
        return "no end" if "2" in req.messages[0]["content"] else "Done here."

    done, first = sample_responses(ScriptedEngine(flaky), rows, 2, 2, Sampling(), QualityCheck(RULES),
                                   random.Random(0), None, checkpoint=ckpt)
    assert len(done) == 4 and len(first) == 6
    engine = ScriptedEngine(lambda req, s: "Now it ends.")
    again, first_again = sample_responses(engine, rows, 2, 3, Sampling(), QualityCheck(RULES),
                                          random.Random(0), None, checkpoint=ckpt)
    assert first_again == first  # the first try is not redone
    assert [r.messages[0]["content"] for r in engine.calls[0][0]] == ["Write 2.", "Write 2."]
    assert len(again) == 6 and {r["id"] for r in again} >= {r["id"] for r in done}
