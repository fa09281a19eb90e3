"""The long-output benchmarks, one class each: what each file holds, how its lengths are
counted, which sampling its paper used, how an answer's length is scored and reported,
and a loader that turns a JSONL file into checked items, each with a stable id, its
language, the prompt sent to the model and its length target (a LonGen window parsed from
the constraint, or a LongBench-Write required length). The formulas are in formulas.py
(algorithm.md 3)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

from selflengthen.core.errors import UserError
from selflengthen.core.lengths import constraint_window
from selflengthen.core.prompting import LANGUAGES
from selflengthen.core.text import count_words, count_words_longwriter, detect_language
from selflengthen.evaluation.formulas import (LONGEN_KINDS, by_required_length, longbench_length_score, longen_score,
                                             summarize_longbench, summarize_longen)
from selflengthen.store import jsonl
from selflengthen.store.jsonl import BadLine



@dataclass(frozen=True)
class Benchmark(ABC):
    """What every benchmark has: its file, the row field holding the prompt, the fields a
    row needs, its own word counter, its judge rubric (rubrics.py; None: no judge) and its
    paper's sampling (`temperature`/`max_new_tokens`; None: the loop's); and what each
    says for itself: an item's length target, the length score, its summary and its plot.
    Adding a benchmark is one class (or one of these with other files) and one entry in
    BENCHMARKS below."""

    name: str
    default_file: str  # the file's usual name (a package resource for a packaged benchmark)
    prompt_field: str = "prompt"
    required_fields: tuple[str, ...] = ("prompt",)
    counter: Callable[[str], int] = count_words
    rubric: str | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    packaged: bool = False  # shipped inside selflengthen/evaluation/
    asks_a_length: ClassVar[bool] = False  # rows hold a required length (what dpo's scoring needs)

    @property
    def sampling(self) -> dict | None:
        """The paper's sampling as plain data, or None for the loop's own."""
        if self.temperature is None and self.max_new_tokens is None:
            return None
        return {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens}

    @abstractmethod
    def target(self, row: dict, where: str) -> dict:
        """The item's length target, read from its row."""

    @abstractmethod
    def length_score(self, item: dict, words: int) -> float:
        """The length score of an answer of `words` words."""

    @abstractmethod
    def length_summary(self, rows: list[dict]) -> dict:
        """The length scores' report: `overall` and the benchmark's own breakdowns."""

    def by_length(self, rows: list[dict]) -> dict | None:
        """Per required length: items, mean and max words (None: not reported)."""
        return None

    def total(self, length: dict, quality: dict | None) -> float | None:
        """One score joining the length score's and the judge's summaries (None: the
        benchmark defines none, or nothing was judged)."""
        return None

    @abstractmethod
    def plot(self, rows: list[dict], summary: dict, out: Path) -> Path:
        """The benchmark's figure of the rows, written to `out`."""


@dataclass(frozen=True)
class LongBenchWrite(Benchmark):
    """LongBench-Write's row format: a required length per row, S_l (0..100) and its length
    buckets, judged by the "longbench" rubric into S_q, and S = (S_l + S_q) / 2."""

    required_fields: tuple[str, ...] = ("prompt", "type", "length")
    counter: Callable[[str], int] = count_words_longwriter
    rubric: str | None = "longbench"
    asks_a_length: ClassVar[bool] = True

    def target(self, row: dict, where: str) -> dict:
        """The item's length target, read from its row: the required length."""
        return {"length": _required_length(row["length"], where)}

    def length_score(self, item: dict, words: int) -> float:
        """S_l (0..100) of an answer of `words` words."""
        return longbench_length_score(item["length"], words)

    def length_summary(self, rows: list[dict]) -> dict:
        """S_l overall, by required-length bucket, by type and by language."""
        return summarize_longbench(rows)

    def total(self, length: dict, quality: dict | None) -> float | None:
        """S = (S_l + S_q) / 2, both on 0..100."""
        return None if quality is None else (length["overall"] + quality["overall"]) / 2

    def plot(self, rows: list[dict], summary: dict, out: Path) -> Path:
        """Required vs output length (log-log, with the diagonal)."""
        return _plots().plot_longbench(rows, out, title=self.name)


@dataclass(frozen=True)
class LonGen(Benchmark):
    """LonGen: a length window parsed from each row's constraint (about / range / above /
    below), scored 0..1 by the window formula, reported by type x range x language; its
    judge scores 7 criteria (quality on 1..10: no total). Its paper prescribes no sampling:
    the loop's."""

    prompt_field: str = "query"
    required_fields: tuple[str, ...] = ("language", "range", "type", "constraint", "query")
    rubric: str | None = "longen"

    def target(self, row: dict, where: str) -> dict:
        if row["type"] not in LONGEN_KINDS:
            raise UserError(f"{where}: type {row['type']!r} is not one of {', '.join(LONGEN_KINDS)}; fix that field")
        try:
            return {"window": constraint_window(str(row["constraint"]), row["type"])}
        except ValueError:
            raise UserError(f"{where}: cannot read a length from constraint {row['constraint']!r}; write it "
                            "like 'around 5000 words', '3000-4000 words', '大约5000字' or '3000字至4000字'") from None

    def length_score(self, item: dict, words: int) -> float:
        lo, hi = item["window"]
        return longen_score(words, lo, hi)

    def length_summary(self, rows: list[dict]) -> dict:
        return summarize_longen(rows)

    def plot(self, rows: list[dict], summary: dict, out: Path) -> Path:
        return _plots().plot_longen(summary, out)


@dataclass(frozen=True)
class Ruler(LongBenchWrite):
    """LongWrite-Ruler: LongBench-Write's rows with required lengths up to 30,000 words, so
    its buckets do not fit: S_l without them, and what each required length reached; no judge."""

    rubric: str | None = None

    def length_summary(self, rows: list[dict]) -> dict:
        return {k: v for k, v in summarize_longbench(rows).items() if k != "by_bucket"}

    def by_length(self, rows: list[dict]) -> dict | None:
        return by_required_length(rows)

    def plot(self, rows: list[dict], summary: dict, out: Path) -> Path:
        return _plots().plot_ruler(rows, out)


def _plots():
    """evaluation/plots.py, imported when a plot is drawn (matplotlib is heavy to load)."""
    import selflengthen.evaluation.plots as plots  # deferred: matplotlib

    return plots


HELDOUT_TINY_MAX_NEW_TOKENS = 2048
HELDOUT_WRITING_MAX_NEW_TOKENS = 3072
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        LonGen("longen", "LonGen.jsonl"),
        LongBenchWrite("longbench_write", "longbench_write.jsonl", temperature=0.5, max_new_tokens=32768),
        LongBenchWrite("longbench_write_en", "longbench_write_en.jsonl", temperature=0.5, max_new_tokens=32768),
        Ruler("ruler", "longwrite_ruler.jsonl", temperature=0.5, max_new_tokens=32768),
        # our own budget: above the loop's cap of the tiny preset, so that a generator trained
        # towards that cap is measured by what it writes, not by where it is cut off
        LongBenchWrite("heldout_tiny", "heldout_tiny.jsonl", max_new_tokens=HELDOUT_TINY_MAX_NEW_TOKENS, packaged=True),
        # our own general writing instructions (stories, essays, guides, reports) asking for
        # 100 to 1,500 words: the held-out set of a real model's experiment (not the tiny
        # model's, whose world is the standard library). 1,500 words are ~2,000 tokens.
        LongBenchWrite("heldout_writing", "heldout_writing.jsonl", max_new_tokens=HELDOUT_WRITING_MAX_NEW_TOKENS,
                  packaged=True),
        # the same kinds of request and the same spread of lengths, three times as many (108) on
        # topics of neither heldout_writing nor the `rl`/`dpo` writing prompts: a change's standard
        # error is over items, so this one's is ~sqrt(3) smaller
        LongBenchWrite("heldout_writing_large", "heldout_writing_large.jsonl",
                       max_new_tokens=HELDOUT_WRITING_MAX_NEW_TOKENS, packaged=True),
    )
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


# --- loading --------------------------------------------------------------------------

def benchmark_file(bench: Benchmark, path: str | Path | None) -> Path:
    """The file to read: `path` itself, `path`/default_file for a folder, or the packaged
    file of a packaged benchmark when no path is given (or the folder given, meant for the
    other benchmarks of the same command, does not hold it)."""
    packaged = Path(str(resources.files("selflengthen") / "evaluation" / bench.default_file))
    if path is None:
        if not bench.packaged:
            raise UserError(f"benchmark {bench.name} needs its data file: pass the path of "
                            f"{bench.default_file} (or of the folder that holds it)")
        return packaged
    path = Path(path)
    if not path.is_dir():
        return path
    inside = path / bench.default_file
    return packaged if bench.packaged and not inside.exists() else inside


def _required_length(value: object, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{where}: length {value!r} is not a positive whole number of words; "
                        "write it like \"length\": 2000")
    return value


def _item(bench: Benchmark, row: dict, index: int, where: str) -> dict:
    missing = [f for f in bench.required_fields if f not in row]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}; each {bench.name} row needs "
                        f"{', '.join(bench.required_fields)}")
    prompt = row[bench.prompt_field]
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{where}: field {bench.prompt_field!r} must be non-empty text")
    language = row.get("language") or detect_language(prompt)
    if language not in LANGUAGES:
        raise UserError(f"{where}: language {language!r} is not one of {', '.join(LANGUAGES)}; fix that field")
    return {**row, "id": f"{bench.name}-{index:04d}", "language": language, "prompt": prompt,
            **bench.target(row, where)}


def answers_per_item(items: list[dict], samples: int) -> list[dict]:
    """Each item `samples` times, to be answered independently: the first copy keeps the
    item's id, the others get `<id>~<j>`; each copy records its `sample` j. A benchmark's
    means are then over every answer, and one answer's luck (a loop run to the cap, a
    short reply) weighs 1/samples as much."""
    if samples <= 1:
        return items
    return [{**item, "id": item["id"] if j == 0 else f"{item['id']}~{j}", "sample": j}
            for item in items for j in range(samples)]


def load_items(name: str, path: str | Path | None = None, limit: int | None = None,
               languages: Iterable[str] | None = None) -> list[dict]:
    """The benchmark's items in file order: every row's fields plus `id` (name and
    0-based line index, e.g. longen-0007, stable under limit and language filters),
    `language`, `prompt` and the target (`window` = (lo, hi) for LonGen, `length` as an
    int otherwise). `languages` keeps only those; `limit` then keeps the first ones.
    Any problem with the file raises UserError naming the file, the line and the fix."""
    bench = get_benchmark(name)
    if limit is not None and limit < 1:
        raise UserError(f"limit={limit} keeps no items; give a limit of 1 or more, or none")
    file = benchmark_file(bench, path)
    wanted = set(languages) if languages is not None else None
    if wanted is not None and not wanted <= set(LANGUAGES):
        raise UserError(f"languages {sorted(wanted - set(LANGUAGES))} unknown; use {', '.join(LANGUAGES)}")
    items: list[dict] = []
    try:
        for n, row in jsonl.rows(file):  # a BOM, CRLF and blank lines are fine; ids count every line
            item = _item(bench, row, n - 1, f"{file}, line {n}")
            if wanted is None or item["language"] in wanted:
                items.append(item)
            if limit is not None and len(items) >= limit:
                break
    except FileNotFoundError:
        raise UserError(f"{file}: no such file; pass the path of {bench.default_file} "
                        "(or of the folder that holds it)") from None
    except OSError as err:
        raise UserError(f"{file}: cannot read it ({err.strerror}); check the path and its permissions") from None
    except BadLine as err:
        where = f"{file}, line {err.line}"
        if err.kind == "utf8":
            raise UserError(f"{where}: not UTF-8 text; save the file as UTF-8") from None
        if err.kind == "json":
            raise UserError(f"{where}: not valid JSON ({err.msg}, column {err.column}); "
                            "each line must be one JSON object") from None
        raise UserError(f"{where}: a JSON {err.found}, not an object; each line must be one JSON object") from None
    if not items:
        raise UserError(f"{file}: no items{' in ' + ', '.join(sorted(wanted)) if wanted else ''}; "
                        "check the file and the language filter")
    return items
