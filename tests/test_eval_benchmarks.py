"""Benchmark files: every item of the public sets parses to a length target, LonGen
constraints in both languages give the expected windows, and bad files fail with one
line that names the file, the line and the fix."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from selflengthen.core.errors import UserError
from selflengthen.core.lengths import chinese_numeral, constraint_kind, constraint_numbers, constraint_window
from selflengthen.evaluation.benchmarks import BENCHMARKS, get_benchmark, load_items
from selflengthen.core.text import count_words, count_words_longwriter
from tests.conftest import script_module

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"public benchmark files not found at {DATA}")
FILES = {"longen": 240, "longbench_write": 120, "longbench_write_en": 60, "ruler": 48}


@needs_data
@pytest.mark.parametrize("name", FILES)
def test_every_item_of_the_public_files_has_a_target(name):
    items = load_items(name, DATA / get_benchmark(name).default_file)
    assert len(items) == FILES[name]
    assert len({i["id"] for i in items}) == len(items)
    assert items[7]["id"] == f"{name}-0007"
    for item in items:
        assert item["language"] in ("en", "zh") and item["prompt"].strip()
        if name == "longen":
            lo, hi = item["window"]
            assert 0 < lo < hi
            assert item["prompt"] == item["query"]
            assert constraint_kind(item["constraint"]) == item["type"]  # the wording agrees with the type
        else:
            assert isinstance(item["length"], int) and item["length"] > 0
        json.dumps(item, ensure_ascii=False)  # items go into JSONL prediction files as they are


@needs_data
def test_longen_windows_follow_the_type():
    for item in load_items("longen", DATA):  # a folder finds the benchmark's default file
        lo, hi = item["window"]
        first = constraint_numbers(item["constraint"])[0]
        expected = {"about": (first * 0.8, first * 1.2), "above": (first, first * 1.5),
                    "below": (first * 0.5, first)}.get(item["type"])
        if expected:
            assert (lo, hi) == expected
        else:
            assert (lo, hi) == tuple(constraint_numbers(item["constraint"])[:2])
    assert load_items("longen", DATA, limit=1)[0]["window"] == (1600.0, 2400.0)  # 大约2000字


@needs_data
def test_languages_and_limit_keep_ids_stable():
    everything = load_items("longbench_write", DATA)
    zh = load_items("longbench_write", DATA, languages=["zh"])
    assert {i["language"] for i in zh} == {"zh"} and len(zh) == 60
    assert [i["id"] for i in zh] == [i["id"] for i in everything if i["language"] == "zh"]
    first_three = load_items("longbench_write", DATA, limit=3, languages=["zh"])
    assert [i["id"] for i in first_three] == [i["id"] for i in zh[:3]]
    ruler_langs = {i["language"] for i in load_items("ruler", DATA)}
    assert ruler_langs == {"en", "zh"}


@pytest.mark.parametrize("constraint, window", [
    ("around 5000 words", (4000, 6000)),
    ("about 2,500 words", (2000, 3000)),
    ("approximately 3k words", (2400, 3600)),
    ("3000-4000 words", (3000, 4000)),
    ("2,000-3,000 words", (2000, 3000)),
    ("between 6000 and 8000 words", (6000, 8000)),
    ("2000 to 3000 words", (2000, 3000)),
    ("more than 3000 words", (3000, 4500)),
    ("at least 4000 words", (4000, 6000)),
    ("over 2000 words", (2000, 3000)),
    ("less than 5000 words", (2500, 5000)),
    ("no more than 2000 words", (1000, 2000)),
    ("at most 6000 words", (3000, 6000)),
    ("3000 words", (2400, 3600)),  # a bare length reads as "about"
    ("大约6000字", (4800, 7200)),
    ("约3000字左右", (2400, 3600)),
    ("3000字至4000字", (3000, 4000)),
    ("3000-4000字", (3000, 4000)),
    ("字数在3000到5000之间", (3000, 5000)),
    ("大于2000字", (2000, 3000)),
    ("多于2500字", (2500, 3750)),
    ("超过7000字", (7000, 10500)),
    ("不少于4000字", (4000, 6000)),
    ("小于5000字", (2500, 5000)),
    ("少于3000字", (1500, 3000)),
    ("不超过8000字", (4000, 8000)),
    ("5000字以内", (2500, 5000)),
    ("大约三千字", (2400, 3600)),
    ("五千字左右", (4000, 6000)),
    ("两千字至四千字", (2000, 4000)),
    ("超过两千五百字", (2500, 3750)),
    ("不超过一万字", (5000, 10000)),
    ("1.5万字以内", (7500, 15000)),
])
def test_constraint_windows_in_both_languages(constraint, window):
    assert constraint_window(constraint) == pytest.approx(window)


def test_the_type_field_wins_over_the_wording():
    assert constraint_window("3000-4000 words", "about") == pytest.approx((2400, 3600))
    assert constraint_window("大约5000字", "below") == pytest.approx((2500, 5000))
    assert constraint_window("4000字至3000字", "range") == (3000, 4000)  # put in order


@pytest.mark.parametrize("numeral, value", [("三千", 3000), ("两千", 2000), ("五千", 5000), ("两千五", 2500),
                                            ("三千五百", 3500), ("三千零五", 3005), ("一万", 10000),
                                            ("一万五千", 15000), ("一万五", 15000), ("十五", 15), ("八百", 800)])
def test_chinese_numerals(numeral, value):
    assert chinese_numeral(numeral) == value


def test_unreadable_constraints_raise():
    with pytest.raises(ValueError):
        constraint_window("as long as you like")
    with pytest.raises(ValueError):
        constraint_window("around 5000 words", "range")  # a range needs two lengths
    assert constraint_numbers("写一篇文章，大约三千字") == [3000]  # a lone 一 is not a length
    assert constraint_numbers("3000,4000 words") == [3000, 4000]  # thousands separators take 3 digits


def test_benchmark_descriptions():
    assert set(BENCHMARKS) == {"longen", "longbench_write", "longbench_write_en", "ruler", "heldout_tiny",
                               "heldout_writing", "heldout_writing_large"}
    assert get_benchmark("longen").counter is count_words and get_benchmark("longen").sampling is None
    for name in ("longbench_write", "longbench_write_en", "ruler"):
        bench = get_benchmark(name)
        assert bench.counter is count_words_longwriter and bench.prompt_field == "prompt"
        assert bench.sampling == {"temperature": 0.5, "max_new_tokens": 32768}
    assert get_benchmark("longen").prompt_field == "query"
    with pytest.raises(UserError, match="choose one of"):
        get_benchmark("longbench")


@pytest.mark.parametrize("name", ["heldout_writing", "heldout_writing_large"])
def test_heldout_writing_ships_with_the_package_and_spans_100_to_1500_words(name):
    items = load_items(name)
    assert len(items) >= 30 and {i["language"] for i in items} == {"en"}
    assert min(i["length"] for i in items) == 100 and max(i["length"] for i in items) == 1500
    # the prompt states the length it is scored against ("1,500" or "1500")
    assert all(f"{i['length']:,}" in i["prompt"] or str(i["length"]) in i["prompt"] for i in items)
    tiny = {i["prompt"] for i in load_items("heldout_tiny")}
    assert not tiny & {i["prompt"] for i in items}
    if DATA.is_dir():
        public = {json.loads(line).get("prompt") or json.loads(line)["query"]
                  for f in DATA.glob("*.jsonl") for line in f.read_text(encoding="utf-8").splitlines()}
        assert not public & {i["prompt"] for i in items}


def test_the_large_writing_set_is_three_times_the_small_one_on_other_topics():
    small, large = load_items("heldout_writing"), load_items("heldout_writing_large")
    assert len(large) == 3 * len(small) and len({i["prompt"] for i in large}) == len(large)
    # the same spread of lengths asked, so a change measured on one reads like one on the other
    assert Counter(i["length"] for i in large) == Counter({k: 3 * n for k, n in Counter(i["length"] for i in small).items()})
    assert not {i["prompt"] for i in small} & {i["prompt"] for i in large}
    # no topic of the writing prompts that `rl` and `dpo` train on
    topics = [t.lower() for ts in script_module("rl_writing_prompts").TOPICS.values() for t in ts]
    assert len(topics) > 30
    assert not [(t, i["prompt"]) for t in topics for i in large if t in i["prompt"].lower()]


def test_heldout_tiny_ships_with_the_package():
    items = load_items("heldout_tiny")
    assert 80 <= len(items) <= 100  # 90: a 30-item set measured the same model 20-36 words apart
    assert {i["language"] for i in items} == {"en"}
    lengths = {i["length"] for i in items}
    assert min(lengths) == 50 and max(lengths) == 800 and len(lengths) >= 8
    assert all(str(i["length"]) in i["prompt"] for i in items)
    if DATA.is_dir():
        public = {json.loads(line).get("prompt") or json.loads(line)["query"]
                  for f in DATA.glob("*.jsonl") for line in f.read_text(encoding="utf-8").splitlines()}
        assert not public & {i["prompt"] for i in items}


def _write(tmp_path: Path, content: bytes | str, name: str = "bench.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _error(name: str, path) -> str:
    with pytest.raises(UserError) as info:
        load_items(name, path)
    message = str(info.value)
    assert "\n" not in message
    return message


GOOD = '{"prompt": "Write 300 words on tea.", "type": "Essay", "length": 300}\n'
GOOD_LONGEN = '{"language": "en", "range": "2-4k", "type": "about", "constraint": "around 2000 words", "query": "q"}\n'


def test_bad_files_name_the_file_the_line_and_the_fix(tmp_path):
    missing = _error("longbench_write", tmp_path / "nope.jsonl")
    assert "nope.jsonl" in missing and "no such file" in missing
    bad_bytes = _error("longbench_write", _write(tmp_path, GOOD.encode() + b'{"prompt": "\xff\xfe"}\n'))
    assert "line 2" in bad_bytes and "UTF-8" in bad_bytes
    malformed = _error("longbench_write", _write(tmp_path, GOOD + GOOD + '{"prompt": "x", \n'))
    assert "bench.jsonl, line 3" in malformed and "JSON" in malformed
    not_object = _error("ruler", _write(tmp_path, GOOD + "[1, 2]\n"))
    assert "line 2" in not_object and "object" in not_object
    no_field = _error("longbench_write", _write(tmp_path, '{"prompt": "x", "type": "y"}\n'))
    assert "line 1" in no_field and "'length'" in no_field
    bad_length = _error("longbench_write", _write(tmp_path, '{"prompt": "x", "type": "y", "length": "long"}\n'))
    assert "line 1" in bad_length and "positive whole number" in bad_length
    bad_constraint = _error("longen", _write(tmp_path, GOOD_LONGEN + GOOD_LONGEN.replace("around 2000", "long")))
    assert "line 2" in bad_constraint and "constraint" in bad_constraint and "around 5000 words" in bad_constraint
    bad_type = _error("longen", _write(tmp_path, GOOD_LONGEN.replace('"about"', '"roughly"')))
    assert "type 'roughly'" in bad_type
    empty = _error("longbench_write", _write(tmp_path, "\n\n"))
    assert "no items" in empty
    assert "needs its data file" in _error("longen", None)


def test_blank_lines_and_bom_are_fine_and_ids_count_lines(tmp_path):
    as_text = b'{"prompt": "Write on tea.", "type": "Essay", "length": "400"}\n'
    path = _write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode() + b"\n" + as_text)
    items = load_items("longbench_write", path)
    assert [i["id"] for i in items] == ["longbench_write-0000", "longbench_write-0002"]
    assert items[1]["length"] == 400  # a number written as a string is read as one
    with pytest.raises(UserError, match="limit"):
        load_items("longbench_write", path, limit=0)
    with pytest.raises(UserError, match="languages"):
        load_items("longbench_write", path, languages=["fr"])


def test_heldout_tiny_measures_past_the_loops_cap_with_the_loops_sampling_otherwise():
    """The held-out set has a budget of its own above the tiny preset's 1,024-token cap
    (a generator trained towards the cap is measured by what it writes, not cut off where
    the loop cuts), keeps the loop's temperature and stop strings, and eval.max_tokens and
    the context still cap it."""
    from selflengthen.engines import Sampling
    from selflengthen.evaluation.runner import bench_sampling

    loop = Sampling(temperature=0.7, max_tokens=1024, stop=("---",))
    sampling, meta = bench_sampling(get_benchmark("heldout_tiny"), loop, None, 8192)
    assert sampling.max_tokens > 1024 and meta["capped_by"] is None
    assert (sampling.temperature, sampling.stop) == (0.7, ("---",))
    assert bench_sampling(get_benchmark("heldout_tiny"), loop, 512, 8192)[0].max_tokens == 512
    assert bench_sampling(get_benchmark("heldout_tiny"), loop, None, 1500)[0].max_tokens == 1500
    assert bench_sampling(get_benchmark("longen"), loop, None, 8192)[0].max_tokens == 1024  # LonGen: the loop's
