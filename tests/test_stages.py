"""Stage logic with a scripted engine: request shapes, filters, retries, acceptance,
per-sample checkpoints, and chains that do not wait for each other."""
import asyncio
import random
from dataclasses import replace

from selflengthen.core import prompting
from selflengthen.core.quality import QualityCheck
from selflengthen.core.text import QualityRules, continue_after, count_words
from selflengthen.engines import Completion, Sampling
from selflengthen.pipeline.stages.augment import Augmenter
from selflengthen.pipeline.stages.curate import degrade, hinted, sft_records
from selflengthen.pipeline.stages.extend import ExtendChain, extend_responses
from selflengthen.pipeline.stages.generate import GenerateChain, sample_responses
from selflengthen.store.samples import SampleLog, stable_seed
from tests.fakes import ScriptedEngine, held_until

RULES = {"en": QualityRules(terminal_marks=(".", "!", "?"), ngram=10, meta_words=("response",)),
         "zh": QualityRules(terminal_marks=("。",), ngram=13)}


def run(coro):
    return asyncio.run(coro)


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
    new = run(aug.augment(["Seed one is here.", "Seed two is here."], wanted=2, language="en", id_prefix="i1-en"))
    assert [r["instruction"] for r in new] == ["Write about rivers in depth.",
                                               "Write about mountains and the people there."]
    assert {r["id"] for r in new} == {"i1-en-0", "i1-en-1"}
    s = aug.stats
    assert (s.drawn, s.rejected_words, s.rejected_duplicate, s.rejected_judge, s.accepted) == (5, 1, 1, 1, 2)
    # the accepted instruction joined the pool: later draws could and did use it
    prefixes = [r.prefix for r in engine.requests if r.prefix]
    assert any("rivers" in p for p in prefixes[1:])
    assert all("Instruction 4:" in sp.stop for r, sp in engine.calls if r.prefix)


def test_augment_gives_up_after_the_try_budget():
    engine = ScriptedEngine(lambda req, s: "x" if req.prefix else "yes")
    aug = Augmenter(engine, Sampling(), Sampling(), min_words=3, max_words=500, tries_per_instruction=3)
    assert run(aug.augment(["a b c d", "e f g h"], wanted=4, language="en", id_prefix="p")) == []
    assert aug.stats.drawn == 12


def test_augment_checkpoint_resumes_and_feeds_the_pool(tmp_path):
    log_path = tmp_path / "augment.jsonl"
    words = iter(f"Write a long story about the city number {i}." for i in range(100))
    engine = ScriptedEngine(lambda req, s: next(words) if req.prefix else "yes")
    aug = Augmenter(engine, Sampling(), Sampling(), min_words=3, max_words=500, tries_per_instruction=2)
    first = run(aug.augment(["a b c d", "e f g h"], 3, "en", "i1-en", SampleLog(log_path)))
    again = ScriptedEngine(lambda req, s: "unused")
    aug2 = Augmenter(again, Sampling(), Sampling(), min_words=3, max_words=500, tries_per_instruction=2)
    second = run(aug2.augment(["a b c d", "e f g h"], 3, "en", "i1-en", SampleLog(log_path)))
    assert second == first and again.calls == [] and aug2.stats.resumed == 3


def _chain(engine, retries=20, adapter="generator"):
    return GenerateChain(engine, Sampling(), QualityCheck(RULES), retries, adapter, seed=(0, "generate", 1))


def test_generate_retries_until_the_quality_check_passes():
    tries = {}

    def respond(req, sampling):
        tries[req.key] = tries.get(req.key, 0) + 1
        return "A fine answer." if tries[req.key] >= 3 else "broken answer without an end"

    rows = [{"id": "i0", "instruction": "Write X.", "language": "en"}]
    chain = _chain(ScriptedEngine(respond))
    done, first = run(sample_responses(chain, rows, 2, SampleLog(None)))
    assert [d["id"] for d in done] == ["i0-s0", "i0-s1"]
    assert first == [5, 5] and chain.check.failures == {"unterminated": 4}
    assert [d["tries"] for d in done] == [3, 3]
    engine = ScriptedEngine(lambda r, s: "never ends")
    done, _ = run(sample_responses(_chain(engine, retries=4, adapter=None), rows, 2, SampleLog(None)))
    assert done == [] and len(engine.calls) == 8 and all(r.adapter is None for r in engine.requests)


def test_generate_never_keeps_a_text_cut_at_the_token_cap():
    """A cut text ending in a terminal mark passes the reference's check (the shipped
    default); with cut: reject it is retried, and the tally names why."""
    tries = {}

    def respond(req, sampling):
        tries[req.key] = tries.get(req.key, 0) + 1
        return Completion("An answer that ran out of tokens here.", finish_reason="length") if tries[req.key] == 1 \
            else "A finished answer."

    rows = [{"id": "i0", "instruction": "Write X.", "language": "en"}]
    rejecting = {"en": replace(RULES["en"], cut="reject")}
    chain = GenerateChain(ScriptedEngine(respond), Sampling(), QualityCheck(rejecting), 3, None, seed=(0, "g", 1))
    done, _ = run(sample_responses(chain, rows, 1, SampleLog(None)))
    assert [(d["response"], d["tries"]) for d in done] == [("A finished answer.", 2)]
    assert chain.check.failures == {"cut": 1}
    tries.clear()
    reference = _chain(ScriptedEngine(respond))  # RULES: cut "reference", the reference's check
    done, _ = run(sample_responses(reference, rows, 1, SampleLog(None)))
    assert [(d["response"], d["tries"]) for d in done] == [("An answer that ran out of tokens here.", 1)]


def test_generate_seeds_depend_on_the_sample_not_on_the_order():
    rows = [{"id": f"i{n}", "instruction": f"Write {n}.", "language": "en"} for n in range(3)]
    engine = ScriptedEngine(lambda r, s: "Done.")
    run(sample_responses(_chain(engine), rows, 2, SampleLog(None)))
    seeds = {r.key: r.seed for r in engine.requests}
    assert seeds["i1-s0"] == stable_seed((0, "generate", 1), "i1-s0", 1)
    assert len(set(seeds.values())) == 6


def test_chains_do_not_wait_for_each_other():
    """A slow sample's retry must not hold back the other samples' next calls."""
    rows = [{"id": "slow", "instruction": "Write slowly.", "language": "en"},
            {"id": "fast", "instruction": "Write fast.", "language": "en"}]
    tries = {}
    fast_finished = asyncio.Event()

    def respond(req, s):
        tries[req.key] = tries.get(req.key, 0) + 1
        if req.key == "fast-s0" and tries[req.key] >= 3:
            fast_finished.set()
        return "ok." if tries[req.key] >= 3 else "unfinished"

    # the slow sample's first try lasts until the fast sample has made all its tries (had the
    # chains waited for each other, that would never happen: held_until gives up after 30 s)
    engine = ScriptedEngine(respond, delay=lambda req: held_until(fast_finished)
                            if "slowly" in req.messages[0]["content"] and tries.get(req.key, 0) == 0 else 0.0)
    run(sample_responses(_chain(engine), rows, 1, SampleLog(None)))
    order = [r.key for r in engine.requests]
    assert order.count("fast-s0") == 3 and order.count("slow-s0") == 3
    # all three tries of the fast sample happen before the slow sample's second try
    assert order.index("slow-s0", 1) > max(i for i, k in enumerate(order) if k == "fast-s0")


def _initial(text, ident="i0-s0"):
    return {"id": ident, "instruction_id": "i0", "instruction": "Write X.", "language": "en", "response": text}


def _extend_chain(engine, *, retries=5, rounds=1, adapter="extender"):
    return ExtendChain(engine, Sampling(), QualityCheck(RULES), retries, rounds, 1.2, adapter, seed=(0, "extend", 1))


def test_extension_two_stages_prefix_and_acceptance():
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))

    def respond(req, sampling):
        content = req.messages[0]["content"]
        if not req.prefix:  # stage 1 expands the first half only: 3 paragraphs, the last dropped
            assert "Part 1 says something." in content and "Part 2" not in content
            return "One new detail.\n\nTwo new details.\n\nIn conclusion it ends."
        assert "Part 3 says something." in content  # stage 2 sees the whole current text
        assert req.prefix == "One new detail.\n\nTwo new details.\n\n"
        return "More about the rest of it, in depth.\n\nAnd a little more, with one more example of it."

    engine = ScriptedEngine(respond)
    chain = _extend_chain(engine)
    rows = run(extend_responses(chain, [_initial(initial)], 1, SampleLog(None)))
    assert len(rows) == 1 and rows[0]["tries"] == 1
    assert rows[0]["response"].startswith("One new detail.\n\nTwo new details.\n\nMore about the rest")
    assert "In conclusion" not in rows[0]["response"]
    assert rows[0]["words"] == count_words(rows[0]["response"]) and rows[0]["round_words"][0] == 16
    assert all(r.adapter == "extender" for r in engine.requests)
    assert {r.key for r in engine.requests} == {"i0-s0-a0"}


def test_extension_whose_stage2_is_cut_at_the_cap_is_not_accepted():
    """Stage 2 cut at the token cap leaves an unfinished text, however long: with cut: reject
    the try fails and the next, which ends, is accepted. A Stage 1 cut costs nothing (only
    its leading two thirds are kept)."""
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    stage2 = iter([Completion("A long rest of it, in depth, with more and more detail, and then more of the same detail.",
                                  finish_reason="length"),
                   "A finished rest of it, in depth, with one more example and one more detail of it."])

    def respond(req, sampling):
        if not req.prefix:
            return Completion("One new detail.\n\nTwo new details.\n\nThree", finish_reason="length")
        return next(stage2)

    rejecting = {"en": replace(RULES["en"], cut="reject")}
    chain = ExtendChain(ScriptedEngine(respond), Sampling(), QualityCheck(rejecting), 2, 1, 1.2, None, seed=(0, "e", 1))
    rows = run(extend_responses(chain, [_initial(initial)], 1, SampleLog(None)))
    assert [r["tries"] for r in rows] == [2] and rows[0]["response"].endswith("one more detail of it.")
    assert chain.check.failures == {"cut": 1}


def test_extension_longer_than_max_growth_is_cut_back_at_a_line_end():
    """With a bound, a round's text past max_growth x the draft keeps its longest prefix
    within the bound that ends a line on a terminal mark, and the engine's cut goes with
    the tail: the kept text is finished at that line."""
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))  # 12 words
    rest = "\n".join(f"Line {i} of the rest, with one more word." for i in range(12))

    def respond(req, sampling):
        if not req.prefix:
            return "One new detail.\n\nTwo new details.\n\nThree new ones."
        return Completion(rest + "\nand then cut", finish_reason="length")

    rejecting = {"en": replace(RULES["en"], cut="reject")}
    bounded = ExtendChain(ScriptedEngine(respond), Sampling(), QualityCheck(rejecting), 1, 1, 1.2, None,
                          seed=(0, "e", 1), max_growth=2.0)
    rows = run(extend_responses(bounded, [_initial(initial)], 1, SampleLog(None)))
    assert len(rows) == 1 and rows[0]["words"] <= 24 and rows[0]["words"] > 1.2 * 12
    assert rows[0]["response"].endswith("with one more word.") and bounded.stats.trimmed == 1
    assert rows[0]["response"] == "One new detail.\n\nTwo new details.\n\n" + "\n".join(rest.split("\n")[:2])
    unbounded = ExtendChain(ScriptedEngine(respond), Sampling(), QualityCheck(rejecting), 1, 1, 1.2, None,
                            seed=(0, "e", 1))
    assert run(extend_responses(unbounded, [_initial(initial)], 1, SampleLog(None))) == []  # cut: rejected
    assert unbounded.stats.trimmed == 0


def test_extension_with_drop_preface_builds_on_stage1_text_without_its_preface():
    """A Stage-1 reply that opens "Here is the expanded response:" makes Stage 2's prefix, so
    the whole extension fails the meta-word check; with drop_preface the line goes first."""
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    prefixes = []

    def respond(req, sampling):
        if not req.prefix:
            return "Here is the expanded response:\n\nOne new detail.\n\nTwo new details.\n\nThree new ones."
        prefixes.append(req.prefix)
        return "More about the rest of it, in depth.\n\nAnd a little more, with one more example of it."

    def chain(drop):
        return ExtendChain(ScriptedEngine(respond), Sampling(), QualityCheck(RULES), 1, 1, 1.2, None,
                           seed=(0, "e", 1), drop_preface=drop)

    plain = chain(False)
    assert run(extend_responses(plain, [_initial(initial)], 1, SampleLog(None))) == []
    assert plain.check.failures == {"meta_words": 1} and prefixes[-1].startswith("Here is the expanded response:")
    dropping = chain(True)
    rows = run(extend_responses(dropping, [_initial(initial)], 1, SampleLog(None)))
    assert prefixes[-1] == "One new detail.\n\nTwo new details.\n\n" and dropping.stats.prefaces_dropped == 1
    assert len(rows) == 1 and rows[0]["response"].startswith("One new detail.")


def test_extension_joins_stage2_at_one_paragraph_break():
    """A continuation that opens with newlines of its own (after the prefix's blank line)
    joins at one blank line: three newlines are a stop string, and a generator trained on
    texts holding them learns to stop there."""
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))

    def respond(req, sampling):
        if not req.prefix:
            return "One new detail.\n\nTwo new details.\n\nIn conclusion it ends."
        return "\n  \n    indented rest of it, in depth.\n\nAnd a little more, with one more example."

    rows = run(extend_responses(_extend_chain(ScriptedEngine(respond)), [_initial(initial)], 1, SampleLog(None)))
    assert rows[0]["response"].startswith("One new detail.\n\nTwo new details.\n\n    indented rest of it")
    assert "\n\n\n" not in rows[0]["response"]


def test_continue_after_keeps_a_continuation_without_prefix_as_written():
    assert continue_after("", "\n\nText.\n") == "Text."
    assert continue_after("Kept.\n\n", "\n\n\nRest.") == "Kept.\n\nRest."
    assert continue_after("Kept.\n\n", "Rest,\n\n\nmore.") == "Kept.\n\nRest,\n\n\nmore."  # only its start


def test_extension_rejects_too_little_growth_and_retries():
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))

    def respond(req, sampling):  # the extension is barely longer: below 1.2x
        return "A.\n\nB.\n\nC." if not req.prefix else "Part two and three and also a bit."

    engine = ScriptedEngine(respond)
    chain = _extend_chain(engine, retries=3, rounds=2, adapter=None)
    rows = run(extend_responses(chain, [_initial(initial)], 2, SampleLog(None)))
    assert rows == [] and chain.stats.tries == 6 and chain.stats.accepted == 0
    assert len(engine.calls) == 2 * 3 * 2 * 2  # attempts x tries x rounds x (stage 1 + stage 2)
    # each attempt's Stage 2 follows its own Stage 1 directly (no barrier across attempts)
    per_attempt = {}
    for r in engine.requests:
        per_attempt.setdefault(r.key, []).append(bool(r.prefix))
    assert all(seq == [False, True] * 6 for seq in per_attempt.values())


def test_extension_stage2_starts_before_a_slow_stage1_of_another_attempt():
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    long = "\n\n".join(f"Detail {i} is added with care." for i in range(8))
    fast_stage2 = asyncio.Event()

    def delay(req):  # the slow attempt's Stage 1 lasts until the fast attempt has asked for its Stage 2
        if req.key.startswith("fast") and req.prefix:
            fast_stage2.set()
        return held_until(fast_stage2) if req.key.startswith("slow") and not req.prefix else 0.0

    engine = ScriptedEngine(lambda req, s: long, delay=delay)
    chain = _extend_chain(engine, retries=1)
    run(extend_responses(chain, [_initial(initial, "slow"), _initial(initial, "fast")], 1, SampleLog(None)))
    order = [(r.key, bool(r.prefix)) for r in engine.requests]
    assert order.index(("fast-a0", True)) < order.index(("slow-a0", True))


def test_extension_checkpoint_resumes(tmp_path):
    initial = "\n\n".join(f"Part {i} says something." for i in range(4))
    long = "\n\n".join(f"Detail {i} is added with care." for i in range(8))
    ckpt = tmp_path / "extend.jsonl"
    engine = ScriptedEngine(lambda req, s: long if not req.prefix else long.replace("Detail", "Fact"))
    first = run(extend_responses(_extend_chain(engine, retries=1), [_initial(initial)], 2, SampleLog(ckpt)))
    assert len(first) == 2 and len(ckpt.read_text().splitlines()) == 2
    again = ScriptedEngine(lambda req, s: "unused")
    chain = _extend_chain(again, retries=1)
    second = run(extend_responses(chain, [_initial(initial)], 2, SampleLog(ckpt)))
    assert second == first and again.calls == [] and chain.stats.resumed_attempts == 2


def test_sft_records_for_both_roles():
    row = {"id": "x", "instruction": "Write X.", "language": "en", "initial": "l1\nl2\nl3\nl4\nl5\nl6",
           "response": "A much longer answer."}
    gen, ext = sft_records([row], keep_prob=0.8, rng=random.Random(3))
    assert gen[0]["messages"] == [{"role": "user", "content": "Write X."},
                                  {"role": "assistant", "content": "A much longer answer."}]
    assert ext[0]["messages"][-1] == gen[0]["messages"][-1]
    draft = degrade(row["initial"], 0.8, random.Random(3))
    assert ext[0]["messages"][0]["content"] == prompting.extender_request("Write X.", draft, "en")[0]["content"]


def test_length_hints_state_each_chosen_rows_own_length_for_the_generator_only():
    from selflengthen.evaluation.benchmarks import constraint_window

    rows = [{"id": f"r{n}", "instruction": f"Write about topic {n}.", "language": lang, "initial": "a\nb",
             "response": ("word " if lang == "en" else "字") * words + ("." if lang == "en" else "。")}
            for n, (lang, words) in enumerate([("en", 620), ("en", 180), ("zh", 900), ("en", 20), ("en", 1430), ("en", 64)])]
    plain, plain_ext = sft_records(rows, keep_prob=0.8, rng=random.Random(3))
    gen, ext = sft_records(rows, keep_prob=0.8, rng=random.Random(3), hints=1.0, hint_rng=random.Random(5))
    assert ext == plain_ext  # the extender's rows never carry a hint, and draw the same lines
    for row, record, bare in zip(rows, gen, plain):
        asked = record["messages"][0]["content"]
        assert record["messages"][1:] == bare["messages"][1:]
        if row["id"] == "r3":  # 20 words: under the hints' floor (30), left bare
            assert "length_hint" not in record and record == bare
            continue
        hint = record["length_hint"]
        assert hint in asked and asked != bare["messages"][0]["content"]
        assert f"topic {row['id'][1:]}" in asked
        low, high = constraint_window(hint, "")  # LonGen's window of the hint holds the response
        assert low <= count_words(row["response"]) <= high, (hint, row["id"])
    # a share of the rows, drawn with its own seed; 0 leaves every row as the paper's loop makes it
    assert sft_records(rows, 0.8, random.Random(3), hints=0.0, hint_rng=random.Random(5))[0] == plain
    for words in range(30, 3000, 7):  # every type of hint, at every length, holds its response
        rng = random.Random(words)
        for _ in range(8):
            _, hint = hinted("Write.", "w " * words, "en", rng)
            low, high = constraint_window(hint, "")
            assert low <= words <= high, (words, hint)
    many = [dict(rows[0], id=f"m{n}") for n in range(400)]
    share = sum("length_hint" in r for r in sft_records(many, 0.8, random.Random(3), 0.5, random.Random(1))[0]) / 400
    assert 0.42 < share < 0.58


def test_degrade_keeps_lines_with_the_given_probability():
    text = "\n".join(f"line {i}" for i in range(2000))
    kept = degrade(text, 0.8, random.Random(0)).split("\n\n")
    assert 0.77 < len(kept) / 2000 < 0.83
    assert kept == sorted(kept, key=lambda s: int(s.split()[1]))  # order preserved
    assert degrade("only", 0.0, random.Random(0)) == "only"  # never empty


def test_a_killed_generate_stage_redoes_only_the_samples_in_flight(tmp_path):
    rows = [{"id": f"i{n}", "instruction": f"Write {n}.", "language": "en"} for n in range(3)]
    ckpt = tmp_path / "generate.jsonl"
    stuck = ScriptedEngine(lambda req, s: "Done here.", delay=lambda req: 3600.0 if req.key == "i2-s1" else 0.0)

    async def killed_midway():  # every sample but one finishes, then the stage is cancelled
        stage = asyncio.ensure_future(sample_responses(_chain(stuck), rows, 2, SampleLog(ckpt)))
        for _ in range(3000):  # up to 30 s for the 5 samples that can finish to be checkpointed
            if stage.done() or (ckpt.exists() and len(ckpt.read_text().splitlines()) >= 5):
                break
            await asyncio.sleep(0.01)
        stage.cancel()
        try:
            await stage
        except asyncio.CancelledError:
            pass

    run(killed_midway())
    assert len(ckpt.read_text().splitlines()) == 5
    again = ScriptedEngine(lambda req, s: "Now it ends.")
    done, first = run(sample_responses(_chain(again), rows, 2, SampleLog(ckpt)))
    assert [r.key for r in again.requests] == ["i2-s1"]  # only the sample that was in flight
    assert len(done) == 6 and len(first) == 6 and len({r["id"] for r in done}) == 6
