"""The seed pool: the user's seeds JSONL (`seeds.path`) or the shipped seeds of each language,
read and checked row by row (a bad row is one UserError naming its line)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.core.prompting import LANGUAGES
from selflengthen.core.text import detect_language
from selflengthen.store import jsonl
from selflengthen.store.jsonl import BadLine


def load_seeds(seeds: schema.Seeds, languages: list[str]) -> dict[str, list[str]]:
    """The seed pool by language (`model.languages`): the user's JSONL (seeds.path) or the
    shipped seeds."""
    if seeds.path is None:
        files = [(resources.files("selflengthen") / "seeds" / f"{lang}.jsonl", lang) for lang in languages]
    else:
        files = [(Path(seeds.path).expanduser(), None)]
    pool: dict[str, list[str]] = {lang: [] for lang in languages}
    for path, default_lang in files:
        for n, row in seed_rows(path):
            text = row["instruction"].strip()
            lang = row.get("language") or default_lang or detect_language(text)
            if lang in pool and text:
                pool[lang].append(text)
    thin = [lang for lang, items in pool.items() if len(items) < 2]
    if thin:
        raise UserError(f"the seed pool has fewer than 2 instructions for {thin}; add seeds in those languages "
                        f"to {seeds.path or 'the seeds file'} or drop them from model.languages")
    return pool


def seed_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a seeds JSONL; a file that is not one, or a row without a
    string "instruction" or with an unknown "language", is a UserError naming the line."""
    fix = 'rows are {"instruction": "...", "language": "en"|"zh"}, one JSON object a line'
    try:
        numbered = list(jsonl.rows(path))
    except BadLine as err:
        if err.kind == "utf8":
            raise UserError(f"seeds file {path} is not UTF-8 text (line {err.line}, byte {err.byte}); "
                            "save it as UTF-8") from err
        if err.kind == "json":
            raise UserError(f"seeds file {path} line {err.line} is not valid JSON ({err.msg}, column {err.column}); "
                            f"fix that line ({fix})") from err
        raise UserError(f"seeds file {path} line {err.line} is a JSON {err.found}, not an object; {fix}") from err
    except IsADirectoryError as err:
        raise UserError(f"seeds file {path} is a folder; point seeds.path at a JSONL file ({fix})") from err
    except FileNotFoundError as err:
        raise UserError(f"seeds file {path} does not exist; point seeds.path at a JSONL file, "
                        "or set seeds.path=null for the shipped seeds") from err
    rows = []
    for n, row in numbered:
        where = f"seeds file {path} line {n}"
        if "instruction" not in row:
            raise UserError(f"{where} has no \"instruction\" (keys: {sorted(row)[:5]}); {fix}")
        if not isinstance(row["instruction"], str) or not row["instruction"].strip():
            raise UserError(f"{where}: \"instruction\" must be a non-empty string, not {row['instruction']!r}; {fix}")
        if row.get("language") is not None and row["language"] not in LANGUAGES:
            raise UserError(f"{where}: unknown language {row['language']!r}; use one of {list(LANGUAGES)} "
                            "or leave \"language\" out to detect it")
        rows.append((n, row))
    if not rows:
        raise UserError(f"seeds file {path} is empty; add at least 2 rows per language ({fix}), "
                        "or set seeds.path=null for the shipped seeds")
    return rows

