"""One table of recipes evaluated on the same held-out set: per evaluation folder (`eval`'s
output: predictions.jsonl, summary.json written last), the mean words, S_l (the benchmark's
length score, 0-100), the cap rate, distinct-3, the repeated n-gram rate and the compression
ratio (core/signals.py), the tokens the evaluation generated, and against the base, paired per
item (an item's answers averaged first when samples=N gave it several: `<item>` and
`<item>~j`), the change of S_l, of the words, of the cap rate and of the repeated n-gram rate,
each with its standard error over the items. With --manifests, each recipe's training budget
too: the tokens its training generated and its wall time (an `rl` or `agentwrite`
manifest.json, a `dpo` job's folder: its steps' manifests, a run's folder: the sum over its
iterations' metrics.json, or a run's RUN/iter_K: the sum over iterations 1..K). Markdown on stdout.

    .venv/bin/python scripts/compare_recipes.py BASE_EVAL [RECIPE_EVAL ...] [--names base,rl-length,...]
        [--manifests -,rl/length/manifest.json,...] [--by-length]

--by-length adds a table per length asked: each recipe's mean words, S_l and answers cut at the cap.
An evaluation given as FOLDER+FOLDER (the same recipe evaluated at two seeds) pools their answers:
each item's answers from both are averaged before pairing.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import defaultdict
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


def pooled(spec: str) -> dict[str, dict]:
    """answers() of one folder, or of FOLDER+FOLDER+...: every folder's answers, each id marked
    with its folder's place (`<id>~p<k>`), so an item's answers from all of them average together."""
    folders = spec.split("+")
    if len(folders) == 1:
        return answers(Path(spec))
    return {f"{answer_id}~p{k}": row for k, folder in enumerate(folders) for answer_id, row in answers(Path(folder)).items()}


def per_item(rows: dict[str, dict], value) -> dict[str, float]:
    """{item: the mean of value(row) over its answers} (answers `<item>` and `<item>~j`)."""
    by_item: dict[str, list[float]] = defaultdict(list)
    for answer_id, row in rows.items():
        v = value(row)
        if v is not None:
            by_item[str(row.get("item") or answer_id.split("~")[0])].append(float(v))
    return {item: statistics.fmean(vs) for item, vs in by_item.items()}


def paired(base: dict[str, dict], other: dict[str, dict], value) -> tuple[float, float, int]:
    """(mean change, its standard error, items) of value(row), per item, over the items both hold."""
    b, o = per_item(base, value), per_item(other, value)
    change = [o[i] - b[i] for i in o if i in b]
    se = statistics.stdev(change) / len(change) ** 0.5 if len(change) > 1 else float("nan")
    return statistics.fmean(change), se, len(change)


def cut(row: dict) -> float:
    return 1.0 if row.get("finish_reason") == "length" or row.get("ending") == "cap" else 0.0


def budget(path: Path) -> tuple[int | None, float | None]:
    """(tokens the training generated, wall seconds) of a recipe's manifest.json or run folder."""
    if path.is_dir() and (path / "samples.manifest.json").exists():  # a dpo job: its samples, pairs and training
        done = {m.name: artifacts.read_json(m) for m in path.glob("*.manifest.json")}
        tokens = done["samples.manifest.json"].get("generated_tokens")
        if tokens is None and (path / "samples.jsonl").exists():  # a job from before the manifest counted them
            tokens = sum(r.get("completion_tokens") or 0 for r in artifacts.read_jsonl(path / "samples.jsonl"))
        return tokens, sum(m.get("seconds") or 0.0 for m in done.values()) or None
    if path.is_dir():  # a run: each iteration's metrics.json (its generated tokens, its stages' seconds);
        # a run's RUN/iter_K: iterations 1..K (what that iteration's generator cost)
        upto = int(path.name[5:]) if re.fullmatch(r"iter_\d+", path.name) else None
        run = artifacts.RunPaths(path.parent if upto is not None else path)
        found = [artifacts.read_json(it.metrics) for it in run.iterations()
                 if (upto is None or it.k <= upto) and it.metrics.exists()]
        tokens = [t for m in found if (t := (m.get("tokens") or {}).get("completion_tokens")) is not None]
        seconds = sum(sum((m.get("seconds") or {}).values()) for m in found)
        return (sum(tokens) if tokens else None), seconds or None
    m = artifacts.read_json(path)
    tokens = (m.get("generation") or {}).get("generated_tokens") or (m.get("train") or {}).get("generated_tokens")
    return tokens, m.get("seconds")


def row_of(name: str, rows: dict[str, dict], base: dict[str, dict] | None, manifest: Path | None) -> dict:
    texts = [r["response"] for r in rows.values()]
    sig = signals.aggregate(texts, [r.get("language") for r in rows.values()],
                            [r.get("finish_reason") for r in rows.values()])
    scale = 100 if _fraction(rows) else 1
    out = {"recipe": name, "answers": len(rows), "mean words": statistics.fmean(r["words"] for r in rows.values()),
           "S_l": scale * statistics.fmean(r["length_score"] for r in rows.values()),
           "cap rate": sig["cap_rate"], "distinct-3": sig["distinct_3"],
           "repeated n-gram rate": sig["repeated_ngram_rate"], "compression": sig["compression_ratio"],
           "eval tokens": sum(int(r.get("completion_tokens") or 0) for r in rows.values())}
    if base is not None:
        d, se, n = paired(base, rows, lambda r: scale * r["length_score"])
        out["S_l change (se)"] = f"{d:+.1f} ({se:.1f}), {n} items"
        d, se, _ = paired(base, rows, lambda r: r["words"])
        out["words change (se)"] = f"{d:+.1f} ({se:.1f})"
        d, se, _ = paired(base, rows, cut)
        out["cap rate change (se)"] = f"{d:+.3f} ({se:.3f})"
        d, se, _ = paired(base, rows, lambda r: signals.repetition(r["response"], r.get("language"))
                          ["repeated_ngram_rate"])
        out["repeated n-gram change (se)"] = f"{d:+.4f} ({se:.4f})"
    if manifest is not None:
        tokens, seconds = budget(manifest)
        out["training tokens"] = tokens
        out["training wall min"] = None if seconds is None else seconds / 60
    return out


def by_length(named: list[tuple[str, dict[str, dict]]]) -> list[dict]:
    """One row per length asked (the rows' `length` field): its answers, and each recipe's
    mean words, S_l and answers cut at the cap there."""
    asked = sorted({r["length"] for _, rows in named for r in rows.values() if r.get("length") is not None})
    scales = {name: 100 if _fraction(rows) else 1 for name, rows in named}
    table = []
    for length in asked:
        row: dict = {"words asked": length}
        for name, rows in named:
            here = [r for r in rows.values() if r.get("length") == length]
            scale = scales[name]
            row["answers"] = len(here)
            row[f"{name} words"] = statistics.fmean(r["words"] for r in here)
            row[f"{name} S_l"] = scale * statistics.fmean(r["length_score"] for r in here)
            row[f"{name} cut"] = int(sum(cut(r) for r in here))
        table.append(row)
    return table


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
    p.add_argument("evals", nargs="+", help="evaluation folders, the base first (A+B pools two evaluations)")
    p.add_argument("--names", default="", help="comma-separated names, one per folder")
    p.add_argument("--manifests", default="", help="comma-separated training manifests or run folders, one per "
                                                   "folder ('-' for none, e.g. the base)")
    p.add_argument("--by-length", action="store_true", help="a second table: words, S_l and cut answers per "
                                                             "length asked")
    a = p.parse_args()
    names = a.names.split(",") if a.names else [Path(e.split("+")[0]).name for e in a.evals]
    manifests = [None if m in ("", "-") else Path(m) for m in a.manifests.split(",")] if a.manifests else \
        [None] * len(a.evals)
    if not len(names) == len(manifests) == len(a.evals):
        raise SystemExit("give one name and one manifest (or '-') per evaluation folder")
    evals = [pooled(e) for e in a.evals]
    table = [row_of(names[0], evals[0], None, manifests[0])]
    table += [row_of(name, rows, evals[0], m) for name, rows, m in zip(names[1:], evals[1:], manifests[1:], strict=True)]
    print(markdown(table))
    if a.by_length:
        print()
        print(markdown(by_length(list(zip(names, evals, strict=True)))))


if __name__ == "__main__":
    main()
