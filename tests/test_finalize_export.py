"""Collecting a run's pairs and exporting them: read back with `datasets`, TRL's data
utilities, a plain JSON reader for LLaMA-Factory's alpaca format, and the card."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selflengthen.config import schema
from selflengthen.core import signals
from selflengthen.core.errors import UserError
from selflengthen.finalize import collect, constrain_all, export
from selflengthen.store import artifacts

CONF = Path(__file__).resolve().parent.parent / "conf" / "finalize" / "default.yaml"


def extended_row(sid: str, language: str, instruction: str, response: str, words: int) -> dict:
    return {"id": sid, "initial_id": sid[:-2], "instruction_id": sid.split("-")[0], "language": language,
            "instruction": instruction, "initial": response[:20], "initial_words": words // 2, "response": response,
            "words": words, "tries": 1, "round_words": [words // 2, words]}


def make_run(root: Path) -> Path:
    """iter_1 and iter_2 complete (iter_2 repeats one response of iter_1), iter_3 unfinished."""
    run = artifacts.RunPaths(root / "iterations" / "demo")
    it1, it2, it3 = run.iteration(1), run.iteration(2), run.iteration(3)
    artifacts.write_jsonl(it1.extended, [
        extended_row("i2-0-0", "zh", "写一篇关于故乡的散文，500字左右。", "故乡的河。" * 900, 4500),
        extended_row("i1-0-0", "en", "Write a travel guide to Lisbon in about 500 words.", "Lisbon " * 3400, 3400),
    ])
    artifacts.write_jsonl(it2.extended, [
        extended_row("i7-1-0", "en", "Write a travel guide to Lisbon.", "Lisbon " * 3400, 3400),  # duplicate
        extended_row("i8-0-1", "en", "Write a 1500-word story about a lighthouse keeper.", "Waves. " * 6100, 6100),
        extended_row("i9-0-0", "en", "Write a short poem.", "Rain. " * 300, 300),
    ])
    artifacts.write_jsonl(it3.extended, [extended_row("i10-0-0", "en", "Write more.", "More. " * 2500, 2500)])
    for it in (it1, it2):
        artifacts.write_json(it.manifest, {"iteration": it.k, "complete": True})
    return run.root


def test_collect_refuses_unfinished_iterations(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(UserError) as err:
        collect(run)
    message = str(err.value)
    assert "\n" not in message and "iter_3" in message and "iter_1" not in message
    assert "python -m selflengthen run run.name=demo" in message and "allow_unfinished" in message


def test_collect_complete_iterations_with_provenance_and_dedup(tmp_path):
    rows, stats = collect(make_run(tmp_path), allow_unfinished=True)
    assert [r["id"] for r in rows] == ["it1-i1-0-0", "it1-i2-0-0", "it2-i8-0-1", "it2-i9-0-0"]
    assert stats["duplicates_removed"] == 1 and stats["read"] == 5 and stats["rows"] == 4
    assert stats["skipped_unfinished"] == [3] and stats["per_iteration"] == {"1": 2, "2": 2}
    first = rows[0]
    assert first == {"id": "it1-i1-0-0", "iteration": 1, "source_id": "i1-0-0", "instruction_id": "i1",
                     "language": "en", "instruction": "Write a travel guide to Lisbon in about 500 words.",
                     "response": "Lisbon " * 3400, "words": 3400}


def test_collect_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no iterations"):
        collect(tmp_path)


@pytest.fixture
def exported(tmp_path):
    rows, _ = collect(make_run(tmp_path), allow_unfinished=True)
    rows, constrained = asyncio.run(constrain_all(None, rows, schema.Finalize.model_validate(OmegaConf.to_container(OmegaConf.load(CONF))), seed=0))
    out = tmp_path / "final"
    manifest = export(rows, out, card_info={"model": "tiny-llama", "config_digest": "abc123def4567890",
                                            "name": "demo_final", "constrain": constrained})
    return rows, out, manifest


def test_export_writes_every_file_and_manifest_last(exported):
    rows, out, manifest = exported
    names = {p.name for p in out.iterdir()}
    assert names == {"train.jsonl", "alpaca.json", "dataset_info.json", "hf_dataset", "length_histogram.png",
                     "README.md", "manifest.json"}
    assert not list(out.rglob("*.tmp"))
    last = (out / "manifest.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= last for p in out.rglob("*") if p.is_file())
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == 4 and manifest["counts"]["languages"] == {"en": 3, "zh": 1}
    assert (out / "length_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_reads_back_with_datasets_and_trl(exported):
    from datasets import load_dataset, load_from_disk
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from selflengthen.models.tiny_model import TinyRecipe, train_tokenizer

    rows, out, _ = exported
    disk = load_from_disk(str(out / "hf_dataset"))
    js = load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert len(disk) == len(js) == len(rows)
    assert disk.to_list() == js.to_list()
    for row, src in zip(disk, rows):
        assert row["messages"] == [{"role": "user", "content": src["query"]},
                                   {"role": "assistant", "content": src["response"]}]
        assert (row["id"], row["iteration"], row["source_id"], row["language"]) == \
            (src["id"], src["iteration"], src["source_id"], src["language"])
        assert is_conversational(row)
    constrained = [r for r in disk if r["constraint_type"]]
    assert len(constrained) == 3 and all(r["constraint_text"] in r["messages"][0]["content"] for r in constrained)
    tokenizer = train_tokenizer([r["response"][:500] for r in rows], TinyRecipe(vocab_size=300))
    text = maybe_apply_chat_template(disk[0], tokenizer)
    rendered = text["text"] if "text" in text else text["prompt"] + text["completion"]
    assert rows[0]["query"] in rendered and rows[0]["response"] in rendered


def test_export_alpaca_follows_llama_factory(exported):
    rows, out, _ = exported
    alpaca = json.loads((out / "alpaca.json").read_text(encoding="utf-8"))
    assert isinstance(alpaca, list) and len(alpaca) == len(rows)
    for item, src in zip(alpaca, rows):
        assert item == {"instruction": src["query"], "input": "", "output": src["response"]}
    info = json.loads((out / "dataset_info.json").read_text())
    entry = info["demo_final"]
    assert (out / entry["file_name"]).exists() and entry["formatting"] == "alpaca"
    assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
    assert set(entry["columns"].values()) <= set(alpaca[0])


def test_export_card_counts(exported):
    _, out, _ = exported
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlanguage:\n- en\n- zh\n")
    for line in ("| en | 3 |", "| zh | 1 |", "| 1 | 2 |", "| 2 | 2 |", "| none | 1 |", "| template | 3 |",
                 "`tiny-llama`", "`abc123def4567890`", "length_histogram.png", "# demo_final"):
        assert line in card, line


def test_export_records_the_responses_signals_and_the_card_shows_them(exported):
    _, out, manifest = exported
    train = artifacts.read_jsonl(out / "train.jsonl")  # recomputed from the exported rows
    texts, languages = [r["messages"][-1]["content"] for r in train], [r["language"] for r in train]
    want = {**signals.aggregate(texts, languages), **signals.aggregate_by_segment(texts, 4, languages)}
    assert manifest["signals"] == pytest.approx(want) and manifest["signals"]["texts"] == len(train)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Judge-free quality" in card and "cut into 4 segments" in card
    for key, name in (("distinct_3", "distinct-3"), ("repeated_ngram_rate", "repeated n-gram rate"),
                      ("compression_ratio", "compression ratio")):
        line = next(line for line in card.splitlines() if line.startswith(f"| {name} ("))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        numbers = [want[key], want[f"{key}_seg1"], want[f"{key}_seg4"]]
        assert cells == ["-" if v is None else f"{v:.3f}" for v in numbers], name
