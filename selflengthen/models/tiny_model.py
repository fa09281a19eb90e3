"""The embedded default model: a tiny Llama chat model built offline, on first use,
from text every Python installation carries (pydoc topics and standard-library
docstrings). It learns three chat tasks in our own prompt formats -- writing about a
topic, continuing a numbered list of writing instructions, answering the yes/no judge --
so that every stage of the loop runs on it through the same code path as a real model.

Every prompt family the loop and its evaluation send is in its corpus: writing
instructions with and without a required length ("... in about 300 words"), the
extender's rewrite request, the list continuation, the judge. A family left out is
answered by whichever task the model finds nearest: trained without length clauses, a
model took "words" in a held-out prompt for the judge's cue (its prompt says "2,000
words") and answered a bare "no". The held-out set's own prompts are kept out.

The build is cached under a directory keyed by the recipe, written to a temporary
folder and renamed into place, with build.json written last (its presence = complete).
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import random
import re
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from selflengthen.core import prompting
from selflengthen.core.text import keep_lines
from selflengthen.store import jsonl
from selflengthen.store.artifacts import build_once

BUILDER_VERSION = 5
# reST section underlines and rules in the docs ("*****", "=====", "_____"): as text they teach a
# model to fall into a run of one mark, which it then writes to the token cap (a held-out
# answer of 90 words and 2,000 underscores). Such lines are dropped and inner runs shortened.
_RULE_LINE = re.compile(r"^[ \t]*([-=_*~^#+.])\1{2,}[ \t]*$", re.MULTILINE)
_MARK_RUN = re.compile(r"([-=_*~^#+.])\1{3,}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Our own instruction shapes for the writing task; {topic} is a stdlib subject. An
# optional second sentence (audience, angle) makes the model answer long, detailed
# instructions with prose too, not only short ones.
WRITING_TASKS = [
    "Write about {topic}.",
    "Write a detailed explanation of {topic}.",
    "Describe {topic} at length, with its uses and caveats.",
    "Write a long guide to {topic} for a new programmer.",
    "Explain {topic} thoroughly.",
    "Write an essay on {topic}.",
    "Compose a report on {topic}, section by section.",
    "Draft a chapter of a handbook that covers {topic}.",
]
# Length clauses a writing instruction may carry; {n} and {m} are word counts taken from
# the answer the example trains on, so the model learns what a requested length means.
LENGTH_CLAUSES = [
    " in about {n} words", " in roughly {n} words", " in around {n} words",
    ", about {n} words long", ", roughly {n} words long", " in {n}-{m} words", " in at least {n} words",
]
LENGTH_SENTENCES = [
    " Use about {n} words.", " Aim for about {n} words.", " Keep it to roughly {n} words.",
    " Write {n} to {m} words.", " It should be about {n} words long.",
]
TASK_DETAILS = [
    "",
    " Address it to readers who have never used it, and explain each part carefully.",
    " Include the reasons behind its design, the common mistakes, and a worked example.",
    " The audience is a team of engineers reviewing their code; keep the tone practical.",
    " Cover its history, its behaviour in detail, and how it relates to similar tools.",
    " Make it thorough and specific, as if it were a chapter of a long reference book.",
]


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the built model; its hash names the cache folder."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    max_position_embeddings: int = 8192
    # Long windows: the extender reads a whole response and writes a longer one, and a model
    # never trained past position N stops ending its texts there. 1,024-token windows held
    # the kept extensions under ~450 words; 2,048 let them reach ~800 (docs/experiments/2026-11-24-tiny-demo-preset.md).
    seq_len: int = 2048
    batch_size: int = 1  # one window per step: the same tokens per step as 2 x 1,024
    steps: int = 1800  # 900 left a model that repeats itself once its drafts pass ~300 words
    learning_rate: float = 3e-3
    list_examples: int = 400
    judge_examples: int = 300
    rewrite_examples: int = 400
    rewrite_keep: float = 0.6
    length_share: float = 0.6  # of the writing examples, those whose instruction asks for a length
    seed: int = 0

    def key(self) -> str:
        # the prompt formats it learns are part of the recipe
        templates = [prompting.load_template("en", n) for n in ("augment", "judge", "list_item", "extend")]
        blob = json.dumps({**asdict(self), "builder": BUILDER_VERSION, "templates": templates}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tidy(text: str) -> str:
    """A document without its rule lines, runs of one mark shortened to three."""
    return _MARK_RUN.sub(r"\1\1\1", _RULE_LINE.sub("", text)).strip()


def stdlib_documents(min_words: int = 40) -> list[tuple[str, str]]:
    """(topic, text) pairs: pydoc topics, then module/class/function docstrings, tidied."""
    from pydoc_data.topics import topics

    docs = [(f"the {name} topic", text.strip()) for name, text in sorted(topics.items())]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in {"test", "site-packages", "idlelib", "lib2to3", "tkinter"} or "tests" in rel.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        for node in nodes:
            text = ast.get_docstring(node)
            name = module if node is tree else f"{module}.{node.name}"
            docs.append((f"the {name} module" if node is tree else name, text or ""))
    return [(t, tidy(d)) for t, d in docs if len(d.split()) > min_words and ">>>" not in d]


def round_words(words: int) -> int:
    """A word count as a person would ask for it: to 10 below 100, to 50 below 500, else to 100."""
    unit = 10 if words < 100 else 50 if words < 500 else 100
    return max(unit, unit * round(words / unit))


def writing_instruction(topic: str, words: int, rng: random.Random, length_share: float) -> str:
    """One writing instruction about topic; with probability length_share it asks for a
    length close to `words` (the length of the answer it will be paired with)."""
    task = rng.choice(WRITING_TASKS).format(topic=topic)
    if rng.random() >= length_share:
        return task + rng.choice(TASK_DETAILS)
    low, high = round_words(int(words * 0.8)), round_words(int(words * 1.2) + 10)

    def ask(template: str) -> str:  # a range or a minimum starts below the answer's length
        n = low if "{m}" in template or "at least" in template else round_words(words)
        return template.format(n=n, m=high)

    if rng.random() < 0.5:
        return task[:-1] + ask(rng.choice(LENGTH_CLAUSES)) + "." + rng.choice(TASK_DETAILS)
    sentence = rng.choice(LENGTH_SENTENCES)
    return task + rng.choice(TASK_DETAILS) + ask(sentence)


def heldout_prompts() -> set[str]:
    """The held-out set's prompts, kept out of the corpus so that it stays held out."""
    from importlib.resources import files

    path = Path(str(files("selflengthen") / "evaluation" / "heldout_tiny.jsonl"))
    return {row["prompt"].strip() for _, row in jsonl.rows(path)}


def training_conversations(recipe: TinyRecipe) -> list[list[dict]]:
    """Writing, rewriting, list-continuation and judge conversations, shuffled with the
    recipe seed. No held-out prompt is among them."""
    rng = random.Random(recipe.seed)
    docs = stdlib_documents()
    held_out = heldout_prompts()
    convs = []
    for topic, text in docs:
        task = writing_instruction(topic, len(text.split()), rng, recipe.length_share)
        if task.strip() in held_out:
            continue
        convs.append([{"role": "user", "content": task}, {"role": "assistant", "content": text}])

    def instruction() -> str:
        topic, text = rng.choice(docs)
        return writing_instruction(topic, len(text.split()), rng, recipe.length_share / 2)

    # Rewriting: a draft (some lines of a document dropped) -> the whole document, in the
    # extender's prompt format. It gives the model the ability the extender relies on:
    # to keep what a draft says and add to it, so its output grows with its input.
    for _ in range(recipe.rewrite_examples):
        topic, text = rng.choice(docs)
        draft = "\n".join(keep_lines(text, recipe.rewrite_keep, rng))
        task = writing_instruction(topic, len(text.split()), rng, recipe.length_share / 2)
        convs.append(prompting.extender_request(task, draft, "en") + [{"role": "assistant", "content": text}])
    for _ in range(recipe.list_examples):
        messages, prefix = prompting.augment_request([instruction(), instruction()], "en")
        item = f"{prefix} {instruction()}"
        convs.append(messages + [{"role": "assistant", "content": item}])
    for i in range(recipe.judge_examples):
        if i % 2:
            candidate, verdict = instruction(), "yes"
        else:  # a fragment of prose is no writing assignment
            words = rng.choice(docs)[1].split()
            start = rng.randrange(max(1, len(words) - 12))
            candidate, verdict = " ".join(words[start : start + rng.randint(1, 12)]), "no"
        convs.append(prompting.judge_request(candidate, "en") + [{"role": "assistant", "content": verdict}])
    rng.shuffle(convs)
    return convs


def render(messages: list[dict]) -> str:
    """The chat template by hand (identical to CHAT_TEMPLATE), for the training stream."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def train_tokenizer(texts: list[str], recipe: TinyRecipe):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=recipe.max_position_embeddings,
    )


def build(recipe: TinyRecipe, out_dir: Path, log=print) -> dict:
    """Train the tokenizer and model from scratch and save both to out_dir."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.time()
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    texts = [render(c) for c in training_conversations(recipe)]
    tokenizer = train_tokenizer(texts, recipe)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stream = torch.tensor(
        [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]], dtype=torch.long
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        head_dim=recipe.hidden_size // recipe.num_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    warmup = max(1, recipe.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    losses = []
    for step in range(recipe.steps):
        starts = torch.randint(0, len(stream) - recipe.seq_len - 1, (recipe.batch_size,), generator=gen)
        batch = torch.stack([stream[s : s + recipe.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 200 == 0 or step == recipe.steps - 1:
            log(f"tiny model: step {step + 1}/{recipe.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    return {
        "recipe": asdict(recipe),
        "key": recipe.key(),
        "fingerprint": fingerprint(texts, out_dir),
        "documents": len(texts),
        "training_tokens": len(stream),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": round(time.time() - started, 1),
    }


def weights_digest(folder: Path) -> str:
    """The first 16 hex digits of the sha256 of a build's model.safetensors."""
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()[:16]


def fingerprint(texts: list[str], out_dir: Path) -> dict:
    """What makes this build what it is: the corpus, the libraries that trained it, and a
    digest of the weights it produced. Two builds with the same recipe on two machines can
    differ (floating point differs between CPUs); their weights digests tell whether they do."""
    import platform

    import tokenizers
    import torch
    import transformers

    corpus = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    return {
        "corpus_sha256": corpus[:16],
        "weights_sha256": weights_digest(out_dir),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


# The default recipe's build, shipped inside the package (scripts/build_tiny_model.py writes
# it): a fresh machine starts from the very weights behind the README's figures instead of
# building its own, which differs between CPUs. Any other recipe is built on first use.
SHIPPED_BUILD = Path(__file__).resolve().parent / "tiny_build"


def shipped_build(recipe: TinyRecipe) -> Path | None:
    """The shipped build folder when it was made from exactly this recipe, else None."""
    info = SHIPPED_BUILD / "build.json"
    if not info.is_file():
        return None
    return SHIPPED_BUILD if json.loads(info.read_text(encoding="utf-8")).get("key") == recipe.key() else None


def ensure_tiny_model(cache_dir: Path, recipe: TinyRecipe | None = None, log=print) -> Path:
    """The cached model folder for this recipe: the shipped build copied in when it is this
    recipe's, else built from scratch first if it is missing."""
    import shutil

    recipe = recipe or TinyRecipe()
    final = Path(cache_dir).expanduser() / f"tiny-llama-{recipe.key()}"
    shipped = shipped_build(recipe)

    def make(tmp: Path) -> dict:
        if shipped is not None:
            for f in shipped.iterdir():
                if f.is_file() and f.name != "build.json":
                    shutil.copy2(f, tmp / f.name)
            info = json.loads((shipped / "build.json").read_text(encoding="utf-8"))
            assert weights_digest(tmp) == info["fingerprint"]["weights_sha256"], "the shipped tiny model is damaged"
            return {**info, "installed_from": "the package's shipped build"}
        info = build(recipe, tmp, log=log)
        log(f"tiny model ready: loss {info['final_loss']:.2f} in {info['seconds']} s")
        return info

    announce = (f"installing the shipped tiny model into {final}" if shipped is not None else
                f"building the embedded tiny model into {final} (once; about 5-6 minutes on 2 cores)")
    return build_once(final, make, announce=lambda: log(announce))
