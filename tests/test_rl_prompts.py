"""The `rl` verb's packaged prompt sets (prompts=tiny, the default, and prompts=writing):
found by name from any folder, each row with a window the length reward reads, none equal
to a held-out prompt, and the writing file what its script makes (so an edited template shows)."""
import json
import subprocess
import sys

import pytest

from selflengthen.commands.rl import PACKAGED_PROMPTS, prompt_file
from selflengthen.core import rewards
from selflengthen.core.errors import UserError
from tests.conftest import REPO

SETS = {"tiny": ("rl_tiny_prompts.py", "heldout_tiny.jsonl"), "writing": ("rl_writing_prompts.py", "heldout_writing.jsonl")}


@pytest.mark.parametrize("name", sorted(PACKAGED_PROMPTS))
def test_a_packaged_set_is_found_by_name_and_every_row_has_a_window(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = prompt_file(name, tmp_path / "iterations")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    windows = rewards.windows_or_refuse(rows, str(path))
    assert len(rows) == 400 and all(0 < lo < up for lo, up in windows)
    held = REPO / "selflengthen" / "evaluation" / SETS[name][1]
    held_prompts = {json.loads(line)["prompt"] for line in held.read_text(encoding="utf-8").splitlines()}
    assert not {r["prompt"] for r in rows} & held_prompts


def test_the_writing_set_is_what_its_script_makes(tmp_path):
    # (the tiny set's script lists the running Python's standard library, which differs by version)
    out = tmp_path / "made.jsonl"
    subprocess.run([sys.executable, str(REPO / "scripts" / SETS["writing"][0]), "--out", str(out)], check=True,
                   timeout=120)
    assert out.read_text(encoding="utf-8") == prompt_file("writing", tmp_path).read_text(encoding="utf-8")


def test_an_unknown_set_names_the_packaged_ones(tmp_path):
    with pytest.raises(UserError, match="tiny, writing"):
        prompt_file("poems", tmp_path)


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_script_writes_longbench_write_rows_that_agree_with_their_prompts(name, tmp_path):
    made = {}
    lengths = ["--lengths", "150,1200"] if name == "writing" else []
    for fmt in ("rows", "prompts"):
        out = tmp_path / f"{fmt}.jsonl"
        subprocess.run([sys.executable, str(REPO / "scripts" / SETS[name][0]), "--count", "60", "--seed", "5",
                        *lengths, "--out", str(out), *(["--rows"] if fmt == "rows" else [])], check=True, timeout=120)
        made[fmt] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rows, prompts = made["rows"], made["prompts"]
    assert [r["prompt"] for r in rows] == [p["prompt"] for p in prompts] and all(set(p) == {"prompt"} for p in prompts)
    assert all(r["type"] for r in rows)
    if name == "writing":
        assert {r["length"] for r in rows} == {150, 1200}
    for row in rows:  # the length the row states is the one its prompt asks for (a range's middle)
        lo, up = rewards.row_window({"prompt": row["prompt"]})
        assert lo <= row["length"] <= up, row
        if str(row["length"]) in row["prompt"]:
            assert rewards.row_window({"prompt": row["prompt"]}) == rewards.row_window(row)
    assert any(str(r["length"]) not in r["prompt"] for r in rows) == (name == "tiny")  # the tiny set's ranges
