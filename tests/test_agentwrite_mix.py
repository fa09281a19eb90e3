"""The LongWriter-style training set (agentwrite/mix.py) on literal rows: the filter, the
mix ratio, the general data's forms and errors, and the export's files."""
from __future__ import annotations

import json

import pytest

from selflengthen.config import schema
from selflengthen.agentwrite import mix
from selflengthen.agentwrite.write import keep_rows
from selflengthen.core.errors import UserError
from selflengthen.core.quality import QualityCheck
from selflengthen.core.text import QualityRules
from selflengthen.store import artifacts

LONG = [{"id": f"a{i}", "instruction": f"Write about topic {i}.", "language": "en",
         "response": " ".join(f"word{i}x{j}" for j in range(100 * (i + 1))) + ".",
         "words": 100 * (i + 1), "paragraphs": [{"index": 1, "words": 100 * (i + 1), "finish_reason": "stop"}]}
        for i in range(4)]
CHATS = [
    [{"role": "user", "content": "Hi, what is 2+2?"}, {"role": "assistant", "content": "It is 4."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"},
     {"role": "assistant", "content": "Red."}],
    [{"role": "user", "content": "用中文打个招呼。"}, {"role": "assistant", "content": "你好，很高兴见到你。"}],
    [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
    [{"role": "user", "content": "Say no."}, {"role": "assistant", "content": "No."}],
]


def filt(**kw):
    return schema.AgentFilter(**kw)


def test_filter_by_length_and_quality():
    check = QualityCheck({"en": QualityRules(terminal_marks=(".",), ngram=10)})
    rows = LONG + [{**LONG[0], "id": "cut", "response": LONG[0]["response"][:-1]}]  # no terminal mark
    kept, dropped = keep_rows(rows, filt(min_words=150, max_words=350), check)
    assert [r["id"] for r in kept] == ["a1", "a2"]
    assert dropped == {"too_short": 2, "too_long": 1}  # "cut" is too short before its quality is asked
    kept, dropped = keep_rows(rows, filt(), check)
    assert [r["id"] for r in kept] == ["a0", "a1", "a2", "a3"] and dropped == {"quality": 1}
    assert len(keep_rows(rows, filt(quality=False), check)[0]) == 5


def test_filter_drops_a_response_whose_last_paragraph_was_cut_at_the_cap():
    check = QualityCheck({"en": QualityRules(terminal_marks=(".",), ngram=10, cut="reject")})
    cut_last = {**LONG[1], "id": "cut", "paragraphs": [{"index": 1, "words": 150, "finish_reason": "length"},
                                                        {"index": 2, "words": 0, "finish_reason": "stop"}]}
    cut_first = {**LONG[2], "id": "early", "paragraphs": [{"index": 1, "words": 100, "finish_reason": "length"},
                                                           {"index": 2, "words": 200, "finish_reason": "stop"}]}
    kept, dropped = keep_rows([LONG[0], cut_last, cut_first], filt(), check)
    assert [r["id"] for r in kept] == ["a0", "early"] and dropped == {"quality": 1}
    assert check.failures == {"cut": 1}


@pytest.mark.parametrize("per_long,general", [(0.0, 0), (0.5, 2), (1.0, 4), (3.0, 5)])
def test_mix_ratio_is_capped_by_the_general_data(per_long, general):
    rows = mix.mix(LONG, CHATS, per_long, seed=0)
    sources = [r["source"] for r in rows]
    assert sources.count("agentwrite") == 4 and sources.count("general") == general
    assert rows == mix.mix(LONG, CHATS, per_long, seed=0)  # seeded
    long_rows = {r["id"]: r for r in rows if r["source"] == "agentwrite"}
    assert long_rows["agentwrite-a2"]["messages"] == [{"role": "user", "content": "Write about topic 2."},
                                                     {"role": "assistant", "content": LONG[2]["response"]}]
    for row in rows:
        if row["source"] == "general":
            assert row["messages"] == CHATS[int(row["id"].split("-")[1])]
    assert mix.mix([], CHATS, 2.0, seed=0) == []


def test_general_rows_language_and_words():
    assert mix.general_row(2, CHATS[2])["language"] == "zh" and mix.general_row(2, CHATS[2])["words"] == 10
    assert mix.general_row(0, CHATS[0]) == {"messages": CHATS[0], "id": "general-0", "source": "general",
                                            "language": "en", "words": 3}


def test_alpaca_keeps_history_and_system():
    row = mix.general_row(1, CHATS[1])
    assert mix.alpaca(row) == {"instruction": "Another?", "input": "", "output": "Red.", "system": "Be brief.",
                               "history": [["Name a colour.", "Blue."]]}


def test_general_data_from_jsonl_and_a_saved_dataset(tmp_path):
    src = tmp_path / "general.jsonl"
    src.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in CHATS) + "\n")
    assert mix.load_general(str(src), "train") == CHATS
    from datasets import Dataset

    Dataset.from_list([{"messages": c} for c in CHATS[:2]]).save_to_disk(str(tmp_path / "saved"))
    assert mix.load_general(str(tmp_path / "saved"), "train") == CHATS[:2]


@pytest.mark.parametrize("line,message", [
    ("not json", "line 2: not JSON"),
    ('{"prompt": "x"}', "line 2: expected an object with \"messages\""),
    ('{"messages": [{"role": "user", "content": "only a question"}]}', "end with the assistant"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "role in"),
])
def test_bad_general_data_names_its_line(tmp_path, line, message):
    src = tmp_path / "general.jsonl"
    src.write_text(json.dumps({"messages": CHATS[0]}) + "\n" + line + "\n")
    with pytest.raises(UserError) as err:
        mix.load_general(str(src), "train")
    assert message in str(err.value)


def test_an_unknown_dataset_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a JSONL file nor a dataset"):
        mix.load_general(str(tmp_path / "no-such-dataset"), "train")


def test_export_writes_every_format(tmp_path):
    from datasets import load_from_disk

    rows = mix.mix(LONG, CHATS, 1.0, seed=3)
    manifest = mix.export_set(rows, tmp_path / "train", info={"model": "m", "adapter": None, "general": "g.jsonl"})
    out = tmp_path / "train"
    assert artifacts.read_jsonl(out / "train.jsonl") == rows
    assert load_from_disk(str(out / "hf_dataset")).to_list() == rows
    alpaca = json.loads((out / "alpaca.json").read_text())
    assert len(alpaca) == len(rows) and alpaca == [mix.alpaca(r) for r in rows]
    info = json.loads((out / "dataset_info.json").read_text())["agentwrite_longwriter"]
    assert info["file_name"] == "alpaca.json" and info["columns"]["history"] == "history"
    assert manifest["counts"]["sources"] == {"agentwrite": 4, "general": 4}
    assert manifest["counts"]["long_words"] == {"min": 100, "median": 300, "max": 400}
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
    assert (out / "length_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert "AgentWrite" in (out / "README.md").read_text()
