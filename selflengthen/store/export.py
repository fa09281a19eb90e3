"""Export the final (constrained query, long response) pairs for the trainers people use:

- train.jsonl            TRL's conversational format: {"messages": [user, assistant]} plus
                         provenance (id, iteration, source_id, instruction_id, language,
                         instruction, words, constraint, rewrite)
- alpaca.json            LLaMA-Factory's alpaca format: [{"instruction", "input", "output"}]
- dataset_info.json      its LLaMA-Factory registration (file_name + columns mapping)
- hf_dataset/            the same rows as train.jsonl, `datasets.Dataset.save_to_disk`
- length_histogram.png   response lengths per language
- README.md              a dataset card: counts per language, iteration, constraint type
                         and rewrite path, lengths, judge-free quality signals of the
                         responses (core/signals.py), generating model, config digest
- manifest.json          written last: its presence means the export is complete; with the
                         responses' signals (`signals`, core/signals.set_summary)

Every file is written to a temporary name and renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from selflengthen.core import signals
from selflengthen.store import artifacts

FILES = ("train.jsonl", "alpaca.json", "dataset_info.json", "hf_dataset", "length_histogram.png", "README.md")


def _query(row: dict) -> str:
    """The constrained query when the rows went through constrain_all, else the instruction."""
    return row["query"] if "query" in row else row["instruction"]


def trl_row(row: dict) -> dict:
    """One train.jsonl row: TRL's conversational `messages` plus provenance."""
    constraint = row.get("constraint")  # data, not config: absent for unconstrained rows
    return {
        "messages": [{"role": "user", "content": _query(row)}, {"role": "assistant", "content": row["response"]}],
        "id": str(row["id"]), "iteration": int(row["iteration"]), "source_id": str(row["source_id"]),
        "instruction_id": str(row["instruction_id"]), "language": row["language"],
        "instruction": row["instruction"], "words": int(row["words"]),
        "constraint_type": constraint["type"] if constraint else None,
        "constraint_text": constraint["text"] if constraint else None,
        "constraint_window": [float(x) for x in constraint["window"]] if constraint else None,
        "rewrite": row.get("rewrite", "none"),
    }


def alpaca_row(row: dict) -> dict:
    """LLaMA-Factory alpaca: the whole query is the instruction, no separate input."""
    return {"instruction": _query(row), "input": "", "output": row["response"]}


def dataset_info(name: str, file_name: str = "alpaca.json") -> dict:
    """LLaMA-Factory's dataset_info.json entry (data/README.md of hiyouga/LLaMA-Factory):
    alpaca is the default formatting; the columns map its prompt/query/response roles."""
    return {name: {"file_name": file_name, "formatting": "alpaca",
                   "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}


def summary(rows: list[dict]) -> dict:
    words = [int(r["words"]) for r in rows]
    return {
        "rows": len(rows),
        "languages": dict(sorted(Counter(r["language"] for r in rows).items())),
        "iterations": {str(k): v for k, v in sorted(Counter(int(r["iteration"]) for r in rows).items())},
        "constraint_types": dict(sorted(Counter((r.get("constraint") or {}).get("type", "none") for r in rows).items())),
        "rewrite": dict(sorted(Counter(r.get("rewrite", "none") for r in rows).items())),
        "words": {"min": min(words), "median": statistics.median(words), "mean": round(statistics.fmean(words), 1),
                  "max": max(words)} if words else {},
    }


def plot_lengths(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_lang: dict[str, list[int]] = {}
    for r in rows:
        by_lang.setdefault(r["language"], []).append(int(r["words"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if by_lang:
        ax.hist(list(by_lang.values()), bins=30, stacked=True, label=list(by_lang))
        ax.legend(title="language")
    ax.set_xlabel("response length (Self-Lengthen words)")
    ax.set_ylabel("responses")
    ax.set_title(f"Final training set: {len(rows)} responses")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _table(title: str, counts: dict) -> str:
    lines = [f"| {title} | rows |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in counts.items()]
    return "\n".join(lines)


# the card's quality table: (key of core/signals.set_summary, name, which way is repetitive)
CARD_SIGNALS = (("distinct_3", "distinct-3", "lower"), ("repeated_ngram_rate", "repeated n-gram rate", "higher"),
                ("compression_ratio", "compression ratio", "lower"))


def signals_table(quality: dict) -> str:
    """The card's table of the responses' signals: the mean over the set, and over the first
    and the last segment of each response (does a long text degrade toward its end?)."""
    def num(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| signal (more repetitive when) | all | first segment | last segment |",
             "| --- | ---: | ---: | ---: |"]
    for key, name, worse in CARD_SIGNALS:
        series = signals.segment_series(quality, key) or [None]
        lines.append(f"| {name} ({worse}) | {num(quality[key])} | {num(series[0])} | {num(series[-1])} |")
    return "\n".join(lines)


def dataset_card(stats: dict, card_info: dict, name: str, quality: dict | None = None) -> str:
    langs = ", ".join(stats["languages"]) or "none"
    w = stats["words"]
    details = {k: v for k, v in card_info.items() if k not in ("model", "config_digest", "name")}
    return "\n".join([
        "---",
        "language:", *[f"- {lang}" for lang in stats["languages"]],
        "task_categories:", "- text-generation",
        "tags:", "- long-form-generation", "- self-lengthen", "- synthetic",
        "configs:", "- config_name: default", "  data_files: train.jsonl",
        "---", "",
        f"# {name}", "",
        "Long-writing supervised data made by Self-Lengthen (Quan et al., 2024): the model's own "
        "generator and extender lengthened its responses iteration by iteration; each response is "
        "paired with its instruction, rewritten to carry a length requirement drawn from the response's own length.", "",
        f"- generating model: `{card_info['model']}`",
        f"- run config digest: `{card_info['config_digest']}`",
        f"- rows: {stats['rows']} ({langs})",
        (f"- response length (words): min {w['min']}, median {w['median']}, mean {w['mean']}, max {w['max']}"
         if w else "- response length: no rows"), "",
        _table("language", stats["languages"]), "",
        _table("iteration", stats["iterations"]), "",
        _table("constraint type", stats["constraint_types"]), "",
        _table("query rewritten by", stats["rewrite"]), "",
        "![response lengths](length_histogram.png)", "",
        *(["## Judge-free quality", "", "Means over the responses (docs/quality.md); each response is cut into "
           f"{len(signals.segment_series(quality, 'words'))} segments by words.", "", signals_table(quality), ""]
          if quality else []),
        "## Files", "",
        "- `train.jsonl`: TRL conversational rows (`messages`) with provenance; "
        "`datasets.load_dataset(\"json\", data_files=\"train.jsonl\")`",
        "- `hf_dataset/`: the same rows, `datasets.load_from_disk(\"hf_dataset\")`",
        "- `alpaca.json` + `dataset_info.json`: LLaMA-Factory (alpaca format; "
        f"`dataset: {name}` with this folder as `dataset_dir`)", "",
        *(["## Details", "", "```json", json.dumps(details, indent=2, ensure_ascii=False, default=str),
           "```", ""] if details else []),
    ])


def export(rows: list[dict], out_dir: Path, *, card_info: dict) -> dict:
    """Write every export of `rows` into out_dir (see the module docstring); returns the
    manifest. card_info: {"model", "config_digest"} required, "name" (the dataset's name,
    default "selflengthen_final") and any details for the card (run, seed, stats)."""
    assert "model" in card_info and "config_digest" in card_info, "card_info needs model and config_digest"
    from datasets import Dataset

    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # a re-export is incomplete until its manifest is back
    name = card_info.get("name", "selflengthen_final")
    train = [trl_row(r) for r in rows]
    artifacts.write_jsonl(out / "train.jsonl", train)
    artifacts.write_json(out / "alpaca.json", [alpaca_row(r) for r in rows])
    artifacts.write_json(out / "dataset_info.json", dataset_info(name))
    tmp = out / "hf_dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_list(train).save_to_disk(str(tmp))
    shutil.rmtree(out / "hf_dataset", ignore_errors=True)
    os.replace(tmp, out / "hf_dataset")
    stats = summary(rows)
    quality = signals.set_summary([r["response"] for r in rows], [r["language"] for r in rows])
    plot_lengths(rows, out / "length_histogram.png")
    artifacts.write_text(out / "README.md", dataset_card(stats, card_info, name, quality))
    manifest = {"name": name, "counts": stats, "signals": quality, "files": list(FILES), "model": card_info["model"],
                "config_digest": card_info["config_digest"], "seconds": round(time.time() - started, 2),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": artifacts.package_versions()}
    artifacts.write_json(out / "manifest.json", manifest)
    return manifest
