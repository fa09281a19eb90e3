"""The one JSONL reader (store/jsonl.py): a UTF-8 BOM and CRLF line ends are fine, blank
lines are skipped, line numbers count every line, a bad line names its number and kind, and
only our own files may end in a torn line. The seeds reader, the benchmark reader and the
agentwrite input reader go through it."""
from __future__ import annotations

import codecs

import pytest

from selflengthen.commands.agentwrite import read_instructions
from selflengthen.core.errors import UserError
from selflengthen.evaluation.benchmarks import load_items
from selflengthen.store import artifacts, jsonl
from selflengthen.store.seeds import seed_rows

ROWS = b'{"instruction": "Write a story.", "language": "en"}\n\n{"instruction": "Write a poem.", "language": "en"}\n'


@pytest.mark.parametrize("content", [ROWS, codecs.BOM_UTF8 + ROWS, ROWS.replace(b"\n", b"\r\n"),
                                     codecs.BOM_UTF8 + ROWS.replace(b"\n", b"\r\n").rstrip(b"\r\n")])
def test_bom_and_crlf_are_fine_everywhere(tmp_path, content):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    expected = [(1, {"instruction": "Write a story.", "language": "en"}),
                (3, {"instruction": "Write a poem.", "language": "en"})]
    assert list(jsonl.rows(path)) == expected
    assert seed_rows(path) == expected  # the seeds reader refused a BOM before
    assert artifacts.read_jsonl(path) == [row for _, row in expected]
    assert [r["instruction"] for r in read_instructions(str(path), None)] == ["Write a story.", "Write a poem."]


def test_a_benchmark_file_with_bom_and_crlf_keeps_its_ids(tmp_path):
    path = tmp_path / "heldout.jsonl"
    rows = [b'{"prompt": "Write 300 words about rain.", "type": "story", "length": 300}',
            b'{"prompt": "Write 500 words about snow.", "type": "story", "length": 500}']
    path.write_bytes(codecs.BOM_UTF8 + b"\r\n".join([rows[0], b"", rows[1]]) + b"\r\n")
    items = load_items("longbench_write", path)
    assert [item["length"] for item in items] == [300, 500]
    assert [item["id"] for item in items] == ["longbench_write-0000", "longbench_write-0002"]


@pytest.mark.parametrize("content, kind, line", [
    (b'{"a": 1}\n{"a": \n{"a": 3}\n', "json", 2),
    (b'{"a": 1}\n[1, 2]\n', "object", 2),
    (b'{"a": 1}\n{"a": "\xff"}\n', "utf8", 2),
    (codecs.BOM_UTF8 + b'{"a": 1}\r\n\r\n{"a": 2\r\n{"a": 3}\r\n', "json", 3),
])
def test_a_bad_line_names_its_number_and_kind(tmp_path, content, kind, line):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(jsonl.BadLine) as err:
        list(jsonl.rows(path))
    assert (err.value.kind, err.value.line) == (kind, line), str(err.value)
    with pytest.raises(UserError, match=f"line {line}"):
        seed_rows(path)


def test_only_our_own_files_may_end_in_a_torn_line(tmp_path):
    path = tmp_path / "partial.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "resp')  # a crash mid-write
    assert artifacts.read_jsonl(path) == [{"id": "a"}, {"id": "b"}]
    path.write_bytes('{"id": "a"}\n{"id": "é'.encode()[:-1])  # torn inside a UTF-8 character
    assert artifacts.read_jsonl(path) == [{"id": "a"}]
    with pytest.raises(jsonl.BadLine):
        list(jsonl.rows(path))
    path.write_bytes(b'{"id": "a"}\n{"id": \n{"id": "c"}\n')  # a bad line in the middle is not a torn tail
    with pytest.raises(jsonl.BadLine, match="line 2"):
        artifacts.read_jsonl(path)


def test_user_rows_names_the_file_the_line_and_the_fix(tmp_path):
    from selflengthen.core.errors import UserError
    from selflengthen.store.jsonl import user_rows

    good = tmp_path / "good.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"instruction": "a"}\r\n\r\n{"instruction": "b"}\r\n')
    assert user_rows(good, "input x", "an object") == [(1, {"instruction": "a"}), (3, {"instruction": "b"})]
    cases = {b'{"a": 1}\n\xff\n': "input x line 2: not UTF-8 text; save the file as UTF-8",
             b'{"a": 1}\n{oops\n': "input x line 2: not JSON (",
             b'[1, 2]\n': 'input x line 1: expected an object with "messages"'}
    for raw, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(raw)
        with pytest.raises(UserError) as caught:
            user_rows(bad, "input x", 'an object with "messages"')
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
