"""Prompt building and output parsing for every stage: pure functions over the template
files in prompts/<language>/. The engine is the only thing that talks to a model."""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

LANGUAGES = ("en", "zh")
_FIELD = re.compile(r"\{([a-z_]+)\}")


@lru_cache(maxsize=None)
def load_template(language: str, name: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"no prompt templates for language {language!r}; use one of {LANGUAGES}")
    path = resources.files("selflengthen") / "prompts" / language / f"{name}.txt"
    return path.read_text(encoding="utf-8").rstrip("\n")


def render(template: str, **fields: object) -> str:
    """Fill the template's {name} fields from `fields` in one pass (inserted text is never
    re-scanned, so braces in user text are safe); other braces are left as they are."""
    return _FIELD.sub(lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), template)


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


# --- augmentation (self-instruct) ---------------------------------------------------

def list_label(language: str, number: int) -> str:
    return render(load_template(language, "list_item"), number=number)


def augment_request(examples: list[str], language: str) -> tuple[list[dict], str]:
    """(user turn, assistant prefix) for the few-shot raw completion: the assistant turn
    already holds the numbered examples and the label of the next item."""
    lines = [f"{list_label(language, i + 1)} {ex.strip()}" for i, ex in enumerate(examples)]
    lines.append(list_label(language, len(examples) + 1))
    return user(load_template(language, "augment")), "\n".join(lines)


def augment_stops(language: str, n_examples: int) -> list[str]:
    """Where the next item would begin: the model must write exactly one."""
    return [list_label(language, n_examples + 2), "\n" + list_label(language, n_examples + 2).split()[0]]


def parse_augmented(completion: str) -> str:
    """The new instruction: the completion up to the end of its list item."""
    text = completion.strip()
    text = text.split("\n")[0].strip()
    return text.strip("\"'“”「」 ")


# --- judge ----------------------------------------------------------------------------

def judge_request(instruction: str, language: str) -> list[dict]:
    return user(render(load_template(language, "judge"), instruction=instruction))


_YES = re.compile(r"^\W*(yes|是|可以|能)", re.IGNORECASE)


def parse_judgement(answer: str) -> bool:
    """True only for a clear yes (English 'yes', Chinese 是/可以/能) at the start."""
    return bool(_YES.match(answer.strip()))


# --- generation and extension ---------------------------------------------------------

def generator_request(instruction: str) -> list[dict]:
    """The generator sees the bare instruction as its user turn."""
    return user(instruction)


def extender_request(instruction: str, response: str, language: str) -> list[dict]:
    return user(render(load_template(language, "extend"), instruction=instruction, response=response))
