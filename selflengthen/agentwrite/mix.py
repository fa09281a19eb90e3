"""A LongWriter-style training set (algorithm.md 2: LongWriter-6k mixed with general SFT
data): the kept AgentWrite responses plus rows drawn from a general SFT dataset, at
`agentwrite.mix.general_per_long` general rows per long row, exported with the finalize
export's formats and helpers (store/export.py):

- train.jsonl          TRL's conversational rows: {"messages"} plus id, source
                       (agentwrite | general), language, words
- alpaca.json          LLaMA-Factory alpaca: instruction/output of the last turn, earlier
                       turns as `history`, a system message as `system`
- dataset_info.json    its LLaMA-Factory registration
- hf_dataset/          train.jsonl's rows, `datasets.Dataset.save_to_disk`
- length_histogram.png, README.md, manifest.json (written last)
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from selflengthen.core.errors import UserError
from selflengthen.core.text import count_words, detect_language
from selflengthen.store import artifacts, jsonl
from selflengthen.store.export import alpaca_row, dataset_info, plot_lengths
from selflengthen.store.samples import stable_seed

ROLES = ("system", "user", "assistant")


def check_messages(messages, where: str) -> list[dict]:
    """A chat as [{"role", "content"}], ending with the assistant's turn after a user's."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} turns")
    for turn in messages:
        if not (isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), str)):
            raise UserError(f"{where}: every turn needs a role in {list(ROLES)} and a text content; got {turn!r:.80}")
    if messages[-1]["role"] != "assistant" or not any(t["role"] == "user" for t in messages):
        raise UserError(f"{where}: a chat must have a user turn and end with the assistant's turn")
    return [{"role": t["role"], "content": t["content"]} for t in messages]


def load_general(spec: str, split: str) -> list[list[dict]]:
    """The chats of a general SFT dataset: a JSONL of {"messages"} rows, a folder saved by
    `datasets` (save_to_disk), or a dataset name `datasets.load_dataset` finds."""
    path = Path(spec).expanduser()
    if path.is_file():
        chats = []
        numbered = jsonl.user_rows(path, f"agentwrite.mix.general {path}", 'an object with "messages"')
        for n, row in numbered:
            if "messages" not in row:
                raise UserError(f"agentwrite.mix.general {path} line {n}: expected an object with \"messages\"")
            chats.append(check_messages(row["messages"], f"agentwrite.mix.general {path} line {n}"))
        return chats
    import datasets

    try:
        data = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.load_dataset(spec, split=split)
    except Exception as err:  # noqa: BLE001 - any failure to find or read it is the user's to fix
        raise UserError(f"agentwrite.mix.general={spec!r} is neither a JSONL file nor a dataset datasets can "
                        f"load ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise UserError(f"agentwrite.mix.general={spec!r} has no split {split!r} ({sorted(data)}); "
                            f"set agentwrite.mix.general_split")
        data = data[split]
    if "messages" not in data.column_names:
        raise UserError(f"agentwrite.mix.general={spec!r} has no \"messages\" column ({data.column_names})")
    return [check_messages(row["messages"], f"agentwrite.mix.general row {i}") for i, row in enumerate(data)]


def long_row(row: dict) -> dict:
    """An AgentWrite output row as a training row."""
    return {"messages": [{"role": "user", "content": row["instruction"]},
                         {"role": "assistant", "content": row["response"]}],
            "id": f"agentwrite-{row['id']}", "source": "agentwrite", "language": row["language"],
            "words": int(row["words"])}


def general_row(index: int, messages: list[dict]) -> dict:
    answer = messages[-1]["content"]
    return {"messages": messages, "id": f"general-{index}", "source": "general",
            "language": detect_language(answer), "words": count_words(answer)}


def mix(long_rows: list[dict], general: list[list[dict]], per_long: float, seed) -> list[dict]:
    """The long rows plus round(per_long x their number) general chats (all of them when
    there are fewer), drawn and shuffled with a seed of their own."""
    rng = random.Random(stable_seed(seed, "longwriter-mix"))
    wanted = min(len(general), round(per_long * len(long_rows)))
    picked = sorted(rng.sample(range(len(general)), wanted))
    rows = [long_row(r) for r in long_rows] + [general_row(i, general[i]) for i in picked]
    rng.shuffle(rows)
    return rows


def alpaca(row: dict) -> dict:
    """LLaMA-Factory alpaca with its optional system and history columns."""
    turns = [t for t in row["messages"] if t["role"] != "system"]
    system = "\n\n".join(t["content"] for t in row["messages"] if t["role"] == "system")
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)
               if turns[i]["role"] == "user" and turns[i + 1]["role"] == "assistant"]
    last = alpaca_row({"instruction": turns[-2]["content"] if len(turns) > 1 else "",
                       "response": turns[-1]["content"]})
    return {**last, "system": system, "history": history}


def card(stats: dict, info: dict, name: str) -> str:
    return "\n".join([
        "---", "task_categories:", "- text-generation", "tags:", "- long-form-generation", "- agentwrite",
        "- synthetic", "configs:", "- config_name: default", "  data_files: train.jsonl", "---", "",
        f"# {name}", "",
        "A LongWriter-style SFT set: long responses written by AgentWrite (plan the output as paragraphs, then "
        "write them one by one; Bai et al., 2024) mixed with general SFT chats.", "",
        f"- writing model: `{info['model']}`" + (f" + adapter `{info['adapter']}`" if info.get("adapter") else ""),
        f"- general data: `{info.get('general') or 'none'}`",
        f"- rows: {stats['rows']} ({json.dumps(stats['sources'])}), languages {json.dumps(stats['languages'])}",
        f"- AgentWrite response words: {json.dumps(stats['long_words'])}", "",
        "![response lengths](length_histogram.png)", "",
        "Files: `train.jsonl` (TRL `messages`), `hf_dataset/` (`datasets.load_from_disk`), `alpaca.json` + "
        f"`dataset_info.json` (LLaMA-Factory, `dataset: {name}`).", ""])


def export_set(rows: list[dict], out_dir: Path, *, info: dict, name: str = "agentwrite_longwriter") -> dict:
    """Write the training set's files into out_dir (module docstring); returns the manifest."""
    from datasets import Dataset

    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the manifest is back
    artifacts.write_jsonl(out / "train.jsonl", rows)
    artifacts.write_json(out / "alpaca.json", [alpaca(r) for r in rows])
    registration = dataset_info(name)
    registration[name]["columns"].update(system="system", history="history")
    artifacts.write_json(out / "dataset_info.json", registration)
    tmp = out / "hf_dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_list(rows).save_to_disk(str(tmp))
    shutil.rmtree(out / "hf_dataset", ignore_errors=True)
    os.replace(tmp, out / "hf_dataset")
    long_words = sorted(r["words"] for r in rows if r["source"] == "agentwrite")
    stats = {"rows": len(rows), "sources": dict(sorted(Counter(r["source"] for r in rows).items())),
             "languages": dict(sorted(Counter(r["language"] for r in rows).items())),
             "long_words": {"min": long_words[0], "median": long_words[len(long_words) // 2],
                            "max": long_words[-1]} if long_words else {}}
    plot_lengths(rows, out / "length_histogram.png")
    artifacts.write_text(out / "README.md", card(stats, info, name))
    manifest = {"name": name, "counts": stats, **info, "seconds": round(time.time() - started, 2),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": artifacts.package_versions()}
    artifacts.write_json(out / "manifest.json", manifest)
    return manifest
