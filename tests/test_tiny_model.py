"""The embedded model's recipe: its corpus comes from the standard library, it learns our
own prompt formats, and its tokenizer's chat template matches the training renderer."""
import json
import re
from dataclasses import replace

from selflengthen.core import prompting
from selflengthen.models.tiny_model import (TinyRecipe, heldout_prompts, render, round_words, stdlib_documents, tidy,
                                            train_tokenizer, training_conversations, writing_instruction)


def test_corpus_is_the_standard_library_docs():
    docs = stdlib_documents()
    assert len(docs) > 1000
    # more than 40 words as written; tidy() may then drop a rule line that counted as one
    assert all(len(text.split()) >= 40 for _, text in docs)
    assert not any(re.search(r"([-=_*~^#+.])\1{3}", text) for _, text in docs)  # no runs of one mark left
    assert tidy("Title\n*****\n\nSee __init__ here ________ now.\n  ====  \nEnd.") == "Title\n\n\nSee __init__ here ___ now.\n\nEnd."
    assert any(topic.endswith(" module") for topic, _ in docs) and any(topic == "json.dumps" for topic, _ in docs)


def test_conversations_cover_every_task_in_our_formats():
    recipe = replace(TinyRecipe(), list_examples=5, judge_examples=6, rewrite_examples=4)
    convs = training_conversations(recipe)
    users = [c[0]["content"] for c in convs]
    augment = prompting.load_template("en", "augment")
    assert sum(u == augment for u in users) == 5
    assert sum("Reply with a single word: yes or no." in u for u in users) == 6
    assert sum(u.startswith(prompting.load_template("en", "extend").split("{")[0]) for u in users) == 4
    verdicts = [c[-1]["content"] for c in convs if "yes or no" in c[0]["content"]]
    assert set(verdicts) == {"yes", "no"}
    assert training_conversations(recipe) == convs  # seeded


def test_writing_instructions_ask_for_the_length_of_their_answer():
    import random
    import re

    rng = random.Random(0)
    asked = [writing_instruction("the json module", 333, rng, 1.0) for _ in range(200)]
    for task in asked:
        numbers = [int(n) for n in re.findall(r"\b(\d+)\b", task)]
        assert numbers and all(250 <= n <= 450 for n in numbers) and "words" in task, task
    assert len({re.sub(r"\d+", "N", t.split("json module")[1]) for t in asked}) >= 10  # varied phrasings
    plain = [writing_instruction("the json module", 333, rng, 0.0) for _ in range(50)]
    assert not any("words" in t for t in plain)
    assert [round_words(w) for w in (44, 96, 333, 777)] == [40, 100, 350, 800]


def test_corpus_holds_length_specified_writing_but_no_held_out_prompt():
    convs = training_conversations(replace(TinyRecipe(), list_examples=5, judge_examples=6, rewrite_examples=4))
    writing = [c[0]["content"] for c in convs if len(c) == 2 and not c[0]["content"].startswith(("Assignment:",))]
    with_length = [u for u in writing if " words" in u]
    assert 0.45 < len(with_length) / len(writing) < 0.75  # length_share 0.6
    held_out = heldout_prompts()
    assert len(held_out) == 90 and not held_out & {c[0]["content"].strip() for c in convs}


def test_recipe_key_tracks_the_recipe():
    assert TinyRecipe().key() == TinyRecipe().key()
    assert TinyRecipe(steps=10).key() != TinyRecipe().key()


def test_tokenizer_chat_template_matches_the_training_renderer():
    texts = [render([{"role": "user", "content": "Write about sets."},
                     {"role": "assistant", "content": "A set is an unordered collection."}])] * 20
    tok = train_tokenizer(texts, replace(TinyRecipe(), vocab_size=300))
    messages = [{"role": "user", "content": "Write about sets."}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render(messages) + "<|im_start|>assistant\n"
    ids = tok.encode("<|im_end|>", add_special_tokens=False)
    assert ids == [tok.convert_tokens_to_ids("<|im_end|>")] and tok.eos_token == "<|im_end|>"


def test_a_small_recipe_builds_from_scratch_into_a_cache_that_a_second_call_reuses(tmp_path):
    """The whole builder on a small recipe (the suite's model comes from the shared cache):
    tokenizer and model trained, saved, build.json written last, the folder renamed into
    place; the second call finds it and builds nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selflengthen.models.tiny_model import ensure_tiny_model

    recipe = replace(TinyRecipe(), steps=3, seq_len=64, vocab_size=400, list_examples=4, judge_examples=4,
                     rewrite_examples=4)
    logged = []
    folder = ensure_tiny_model(tmp_path, recipe, log=logged.append)
    assert folder == tmp_path / f"tiny-llama-{recipe.key()}"
    info = json.loads((folder / "build.json").read_text())
    assert info["key"] == recipe.key() and info["recipe"]["steps"] == 3 and info["training_tokens"] > 0
    import hashlib

    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert info["fingerprint"]["weights_sha256"] == weights and len(info["fingerprint"]["corpus_sha256"]) == 16
    assert {"torch", "transformers", "tokenizers", "python"} <= set(info["fingerprint"])
    # no temporary folder left (the build's lock file stays: unlinking one that others may
    # wait on would break it)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [folder.name]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert any("building" in line for line in logged)
    logged.clear()
    assert ensure_tiny_model(tmp_path, recipe, log=logged.append) == folder and logged == []


def test_a_build_finished_elsewhere_meanwhile_is_kept(tmp_path):
    """Two processes building the same recipe: the one that finishes second keeps the first's
    folder (which may be in use) and discards its own."""
    from selflengthen.store.artifacts import publish_build

    final = tmp_path / "model"
    mine = tmp_path / "model.building-1"
    for folder, text in ((final, "theirs"), (mine, "mine")):
        folder.mkdir()
        (folder / "weights").write_text(text)
        (folder / "build.json").write_text("{}")
    assert publish_build(mine, final) == final
    assert (final / "weights").read_text() == "theirs" and not mine.exists()
    (final / "build.json").unlink()  # an incomplete earlier build is replaced
    mine.mkdir()
    (mine / "weights").write_text("mine")
    (mine / "build.json").write_text("{}")
    publish_build(mine, final)
    assert (final / "weights").read_text() == "mine" and not mine.exists()


def test_processes_asking_for_one_build_at_once_build_it_once(tmp_path):
    """A second caller (a test worker beside another, a second `make run`) waits for the
    build in progress and takes its folder, rather than building it again."""
    import multiprocessing

    final = tmp_path / "model"
    ctx = multiprocessing.get_context("fork")
    started = [ctx.Process(target=_build_slowly, args=(final, tmp_path / f"made-{i}")) for i in range(2)]
    for proc in started:
        proc.start()
    for proc in started:
        proc.join(60)
    assert [proc.exitcode for proc in started] == [0, 0]
    assert len(list(tmp_path.glob("made-*"))) == 1  # one build
    assert (final / "weights").read_text() == "built" and json.loads((final / "build.json").read_text()) == {"n": 1}
    assert not list(tmp_path.glob("model.building-*"))


def _build_slowly(final, marker):
    import time

    from selflengthen.store.artifacts import build_once

    def make(tmp):
        marker.write_text("")
        time.sleep(1.0)
        (tmp / "weights").write_text("built")
        return {"n": 1}

    build_once(final, make)


def test_the_shipped_build_is_the_default_recipes():
    """selflengthen/models/tiny_build/ holds the default recipe's build (scripts/build_tiny_model.py
    writes it): change the recipe, the corpus or a template it learns and this fails until the
    build is shipped again."""
    import hashlib

    from selflengthen.models.tiny_model import SHIPPED_BUILD, shipped_build

    info = json.loads((SHIPPED_BUILD / "build.json").read_text())
    assert info["key"] == TinyRecipe().key(), "the shipped tiny model is stale: run scripts/build_tiny_model.py"
    assert shipped_build(TinyRecipe()) == SHIPPED_BUILD and shipped_build(TinyRecipe(seed=1)) is None
    digest = hashlib.sha256((SHIPPED_BUILD / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert digest == info["fingerprint"]["weights_sha256"]


def test_a_fresh_cache_installs_the_shipped_build_instead_of_building(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selflengthen.models.tiny_model import SHIPPED_BUILD, ensure_tiny_model

    logged = []
    folder = ensure_tiny_model(tmp_path, TinyRecipe(), log=logged.append)
    assert any("installing the shipped" in line for line in logged) and not any("step" in line for line in logged)
    info = json.loads((folder / "build.json").read_text())
    shipped = json.loads((SHIPPED_BUILD / "build.json").read_text())
    assert info["fingerprint"] == shipped["fingerprint"] and info["installed_from"]
    tok = AutoTokenizer.from_pretrained(folder)
    assert AutoModelForCausalLM.from_pretrained(folder).config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
