"""`python -m selflengthen agentwrite` through the real CLI: bad input is one line; on the
tiny model with real vLLM, a run killed mid-way (SIGKILL to its whole process group)
resumes with no plan or paragraph lost or written twice, and the outputs agree with the
checkpoint."""
from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from selflengthen.agentwrite.write import kept_signals
from selflengthen.commands.agentwrite import read_instructions
from selflengthen.core.errors import UserError
from selflengthen.core.text import count_words
from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli, kill_session_when
from tests.test_cli_errors import one_error_line

INSTRUCTIONS = [
    ("Write a detailed guide to the json module of Python, with examples.", "en"),
    ("Explain how the pathlib module works, for readers who have never used it.", "en"),
    ("Write a long tutorial on the logging module, covering handlers and formatters.", "en"),
    ("Describe the history and design of the asyncio event loop in depth.", "en"),
    ("Write an extensive explanation of the re module and regular expressions.", "en"),
    ("Write a thorough introduction to the unittest module and test discovery.", "en"),
    ("Explain the sqlite3 module step by step, from connections to transactions.", "en"),
    ("Write a long article on the itertools module and how its tools combine.", "en"),
    ("写一篇关于Python标准库中collections模块的详细介绍。", "zh"),
    ("Describe the subprocess module in depth, with its pitfalls.", "en"),
]


def write_input(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# --- reading the input (no model) --------------------------------------------------------

def test_read_instructions_ids_languages_and_duplicates(tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, [{"instruction": "Write a long story about a lighthouse."},
                      {"instruction": "写一篇关于长江的长文。"},
                      {"instruction": "Write a long story about a lighthouse."},  # read once
                      {"id": "mine", "instruction": " Explain tides. ", "language": "en"}])
    items = read_instructions(str(src))
    assert [i["language"] for i in items] == ["en", "zh", "en"]
    assert items[2] == {"id": "mine", "instruction": "Explain tides.", "language": "en"}
    assert items[0]["id"].startswith("aw-") and items[0]["id"] != items[1]["id"]
    # ids depend on the text, not the line: reordering the file keeps them (a resume matches rows)
    write_input(src, [{"instruction": "写一篇关于长江的长文。"}, {"instruction": "Write a long story about a lighthouse."}])
    assert {i["id"] for i in read_instructions(str(src))} == {items[0]["id"], items[1]["id"]}
    assert len(read_instructions(str(src), limit=1)) == 1


@pytest.mark.parametrize("lines,message", [
    (['{"instruction": "ok"}', "{not json"], "line 2: not JSON"),
    (['{"instruction": "ok", "prompt": "x"}'], "unknown field(s) ['prompt']"),
    (['{"language": "en"}'], "\"instruction\" must be a non-empty string"),
    (['{"instruction": "ok", "language": "fr"}'], "language 'fr'"),
    (['{"id": 1, "instruction": "a"}', '{"id": 1, "instruction": "b"}'], "id '1' is used twice"),
    (["", "  "], "holds no instructions"),
])
def test_bad_input_rows(tmp_path, lines, message):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=None) as err:
        read_instructions(str(src))
    assert message in str(err.value)


@pytest.mark.parametrize("make,expected", [
    (lambda d: [f"input={d / 'absent.jsonl'}"], "is not a file"),
    (lambda d: [], "give the instructions"),
    (lambda d: [f"input={d / 'bad.jsonl'}"], "line 2: not JSON"),
    (lambda d: [f"input={d / 'field.jsonl'}"], "unknown field(s) ['prompt']"),
])
def test_bad_input_is_one_line_through_the_cli(tmp_path, make, expected):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "Write a long essay."}\nnot json\n')
    (tmp_path / "field.jsonl").write_text('{"instruction": "Write a long essay.", "prompt": "x"}\n')
    line = one_error_line(run_cli("agentwrite", *make(tmp_path), f"out_dir={tmp_path / 'out'}", cwd=REPO))
    assert expected in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*/metrics.json"))


# --- on the tiny model ---------------------------------------------------------------------

def kill_after_first_step(args, checkpoint) -> None:
    """Start the CLI in a session of its own; SIGKILL the whole session (driver, Ray and
    engine processes) as soon as the checkpoint holds a written paragraph."""
    log = checkpoint.parent.parent / "killed_run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    kill_session_when([sys.executable, "-m", "selflengthen", *args],
                      lambda: checkpoint.exists() and '"kind": "step"' in checkpoint.read_text(encoding="utf-8"),
                      log, "the run", watch=(checkpoint.parent.parent,))


@pytest.mark.slow
def test_agentwrite_killed_mid_way_resumes_without_losing_or_repeating_a_step(tmp_path, model_cache, tiny_model):
    src = tmp_path / "instructions.jsonl"
    write_input(src, [{"instruction": text, "language": lang} for text, lang in INSTRUCTIONS])
    out = tmp_path / "aw" / "mine"
    # no quality filter: which of the tiny model's texts would pass it is its build's doing (the
    # filter itself: tests/test_agentwrite_mix.py); here every response of a word or more is
    # kept, so the training set and its mix follow from the rows
    common = ["agentwrite", f"input={src}", f"out_dir={tmp_path / 'aw'}", "name=mine",
              f"paths.cache_dir={model_cache}", "agentwrite.filter.quality=false", "agentwrite.filter.min_words=1"]
    # one instruction at a time while it is killed, so the kill lands mid-way
    kill_after_first_step([*common, "agentwrite.max_items_in_flight=1"], out / "checkpoint.jsonl")
    before = artifacts.read_jsonl(out / "checkpoint.jsonl")
    steps_before = {(r["id"], r["index"]): r["text"] for r in before if r["kind"] == "step"}
    plans_before = {r["id"] for r in before if r["kind"] == "plan"}
    assert steps_before and len(plans_before) < len(INSTRUCTIONS), "the kill did not land mid-way"
    assert not (out / "metrics.json").exists()

    proc = run_cli(*common, cwd=REPO)  # the same command, all instructions in flight
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = artifacts.read_jsonl(out / "checkpoint.jsonl")
    plans = Counter(r["id"] for r in ckpt if r["kind"] == "plan")
    steps = Counter((r["id"], r["index"]) for r in ckpt if r["kind"] == "step")
    assert set(plans.values()) == {1} and len(plans) == len(INSTRUCTIONS), "a plan was lost or made twice"
    assert not steps or set(steps.values()) == {1}, "a paragraph was written twice"
    planned = {r["id"]: r for r in ckpt if r["kind"] == "plan" and not r["rejected"]}
    assert set(steps) == {(i, s["index"]) for i, r in planned.items() for s in r["plan"]}, "a step was lost"
    texts = {(r["id"], r["index"]): r["text"] for r in ckpt if r["kind"] == "step"}
    assert all(texts[k] == v for k, v in steps_before.items())  # finished paragraphs are not rewritten

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_steps"] == len(steps_before) and metrics["resumed_plans"] == len(plans_before)
    assert metrics["steps_this_run"] == len(steps) - len(steps_before)
    assert metrics["requests"] == (len(INSTRUCTIONS) - len(plans_before)) + metrics["steps_this_run"]
    assert metrics["items"] == len(INSTRUCTIONS) and metrics["planned"] == len(planned)
    assert sum(metrics["plans_rejected"].values()) == len(INSTRUCTIONS) - len(planned)
    rows = artifacts.read_jsonl(out / "rows.jsonl")
    assert rows, "the tiny model planned none of the instructions"
    assert metrics["signals"] == kept_signals([r for r in rows if r["kept"]])  # judge-free quality of the kept
    for row in rows:  # each response is its steps' paragraphs, with planned and written words per paragraph
        plan = planned[row["id"]]["plan"]
        paragraphs = [texts[(row["id"], s["index"])] for s in plan]
        assert row["response"] == "\n\n".join(p for p in paragraphs if p)
        assert [p["words"] for p in row["paragraphs"]] == [count_words(p) for p in paragraphs]
        assert [p["planned_words"] for p in row["paragraphs"]] == [s["planned_words"] for s in plan]
    para = metrics["plan_vs_actual"]["paragraphs"]
    assert para["n"] == len(steps)
    assert para["mean_actual"] == pytest.approx(sum(count_words(t) for t in texts.values()) / len(texts), abs=0.05)
    assert (out / "plan_vs_actual.png").read_bytes()[:4] == b"\x89PNG"
    train = artifacts.read_jsonl(out / "train" / "train.jsonl")
    kept = [r for r in rows if r["kept"]]
    assert kept == [r for r in rows if r["words"] >= 1] and len(train) == len(kept) == metrics["kept"]
    assert {r["messages"][-1]["content"] for r in train} == {r["response"] for r in kept}
    assert (out / "train" / "manifest.json").exists()
    assert "paragraphs/s" in proc.stdout and f"results: {out}" in proc.stdout

    # a third run finds everything done (no engine, the same rows) and mixes in general chats
    general = tmp_path / "general.jsonl"
    chats = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
             for i in range(20)]
    write_input(general, [{"messages": c} for c in chats])
    again = run_cli(*common, f"agentwrite.mix.general={general}", "agentwrite.mix.general_per_long=2", cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert artifacts.read_jsonl(out / "rows.jsonl") == rows
    assert artifacts.read_jsonl(out / "checkpoint.jsonl") == ckpt
    assert json.loads((out / "metrics.json").read_text())["requests"] == 0
    train = artifacts.read_jsonl(out / "train" / "train.jsonl")
    assert Counter(r["source"] for r in train) == {"agentwrite": len(kept), "general": 2 * len(kept)}
    assert all(r["messages"] in chats for r in train if r["source"] == "general")

    # other settings on the same folder are refused, naming what changed
    line = one_error_line(run_cli(*common, "seed=5", cwd=REPO))
    assert "other settings (changed: seed)" in line and "name=NEW" in line and "redo=write" in line
