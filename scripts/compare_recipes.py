"""One table of recipes evaluated on the same held-out set: per evaluation folder (`eval`'s
output: predictions.jsonl, summary.json written last), the mean words, S_l (the benchmark's
length score, 0-100), the paired per-answer change of S_l and of words against the base
with its standard error (answers paired by id, `<item>` or `<item>~j` with samples=N), the
cap rate, distinct-3, the repeated n-gram rate and the compression ratio (core/signals.py),
and the generated tokens. Markdown on stdout.

    .venv/bin/python scripts/compare_recipes.py BASE_EVAL [RECIPE_EVAL ...] [--names base,rl-length,...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selflengthen.core import signals  # noqa: E402
from selflengthen.store import artifacts  # noqa: E402


def answers(folder: Path) -> dict[str, dict]:
    """{answer id: prediction row} of a finished evaluation (its summary.json exists)."""
    if not (folder / "summary.json").exists():
        raise SystemExit(f"{folder} holds no finished evaluation (no summary.json)")
    return {r["id"]: r for r in artifacts.read_jsonl(folder / "predictions.jsonl")}


def paired(base: dict[str, dict], other: dict[str, dict], key: str) -> tuple[float, float, int]:
    """(mean change, its standard error, answers) of `key` over the ids both hold."""
    change = [float(other[i][key]) - float(base[i][key]) for i in other if i in base]
    se = statistics.stdev(change) / len(change) ** 0.5 if len(change) > 1 else float("nan")
    return statistics.fmean(change), se, len(change)


def row_of(name: str, rows: dict[str, dict], base: dict[str, dict] | None) -> dict:
    texts = [r["response"] for r in rows.values()]
    sig = signals.aggregate(texts, [r.get("language") for r in rows.values()],
                            [r.get("finish_reason") for r in rows.values()])
    out = {"recipe": name, "answers": len(rows), "mean words": statistics.fmean(r["words"] for r in rows.values()),
           "S_l": 100 * statistics.fmean(r["length_score"] for r in rows.values()) if _fraction(rows)
           else statistics.fmean(r["length_score"] for r in rows.values()),
           "cap rate": sig["cap_rate"], "distinct-3": sig["distinct_3"],
           "repeated n-gram rate": sig["repeated_ngram_rate"], "compression": sig["compression_ratio"],
           "generated tokens": sum(int(r.get("completion_tokens") or 0) for r in rows.values())}
    if base is not None:
        scale = 100 if _fraction(rows) else 1
        d, se, n = paired(base, rows, "length_score")
        out["S_l change (se)"] = f"{scale * d:+.1f} ({scale * se:.1f}), n={n}"
        d, se, _ = paired(base, rows, "words")
        out["words change (se)"] = f"{d:+.1f} ({se:.1f})"
    return out


def _fraction(rows: dict[str, dict]) -> bool:
    """Whether length scores are on 0..1 (heldout sets) rather than 0..100."""
    return max((r["length_score"] for r in rows.values()), default=0) <= 1.0


def markdown(table: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in table for k in row))
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (  # noqa: E731
        f"{v:.1f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in table]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("evals", nargs="+", help="evaluation folders, the base first")
    p.add_argument("--names", default="", help="comma-separated names, one per folder")
    a = p.parse_args()
    names = a.names.split(",") if a.names else [Path(e).name for e in a.evals]
    base = answers(Path(a.evals[0]))
    table = [row_of(names[0], base, None)]
    table += [row_of(name, answers(Path(e)), base) for name, e in zip(names[1:], a.evals[1:], strict=True)]
    print(markdown(table))


if __name__ == "__main__":
    main()
