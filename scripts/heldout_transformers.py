"""The held-out evaluation of a model or an adapter through transformers' `generate` in this
process (no Ray, no vLLM engine): for small models on a crowded CPU, where an engine start
costs minutes. Sampling is the loop's (temperature 0.7, top-p 0.8, top-k 20, repetition
penalty 1.1, up to --max-tokens new tokens; an answer is cut at the loop's stop strings "---" and
a triple newline after generation, where an engine would have stopped); each answer is
scored by the evaluation's own scorer (evaluation/scoring.prediction_row), and the folder is
written in `eval`'s format (predictions.jsonl with `<id>` / `<id>~j` answers, summary.json
last), so scripts/compare_recipes.py reads it beside the verb's own evaluations.

    .venv/bin/python scripts/heldout_transformers.py OUT_DIR [--adapter FOLDER] [--samples 2] [--benchmark heldout_tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selflengthen.core import signals  # noqa: E402
from selflengthen.evaluation import scoring  # noqa: E402
from selflengthen.evaluation.benchmarks import get_benchmark, load_items  # noqa: E402
from selflengthen.store import artifacts  # noqa: E402

STOPS = ("---", "\n\n\n")


def generate(model_path: str, adapter: str | None, prompts: list[str], max_tokens: int, seed: int,
             batch: int) -> list[tuple[str, str, int]]:
    """(text, finish_reason, completion tokens) per prompt, in order."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    torch.manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts[start:start + batch]]
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1,
                                 max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id)
        for row in ids[:, enc["input_ids"].shape[1]:].tolist():
            ended = next((i for i, t in enumerate(row) if t in eos), None)
            body = row[:ended] if ended is not None else [t for t in row if t != tok.pad_token_id]
            text = tok.decode(body, skip_special_tokens=True)
            cut = min((text.index(s) for s in STOPS if s in text), default=None)  # cut here, as a stop string
            finish = "stop" if ended is not None or cut is not None else "length"
            tokens = len(tok(text[:cut])["input_ids"]) if cut is not None else len(body) + (ended is not None)
            out.append((text[:cut] if cut is not None else text, finish, tokens))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--model", default=None, help="model folder (default: the embedded tiny model in the cache)")
    p.add_argument("--adapter", default=None)
    p.add_argument("--benchmark", default="heldout_tiny")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--batch", type=int, default=90)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model = a.model or str(next(Path("~/.cache/selflengthen").expanduser().glob("tiny-llama-*[!k]")))
    bench = get_benchmark(a.benchmark)
    items = load_items(bench.name, None)
    asked = [(item, j) for j in range(a.samples) for item in items]
    started = time.time()
    done = generate(model, a.adapter, [item["prompt"] for item, _ in asked], a.max_tokens, a.seed, a.batch)
    rows = []
    for (item, j), (text, finish, tokens) in zip(asked, done, strict=True):
        row = scoring.prediction_row(bench, item, text)
        rows.append({**row, "id": item["id"] if j == 0 else f"{item['id']}~{j}", "item": item["id"], "sample": j,
                     "finish_reason": finish, "completion_tokens": tokens})
    out = Path(a.out)
    artifacts.write_jsonl(out / "predictions.jsonl", rows)
    summary = {"benchmark": bench.name, "model": model, "adapter": a.adapter, "answers": len(rows),
               "generation": "transformers generate (scripts/heldout_transformers.py)",
               "length_score": sum(r["length_score"] for r in rows) / len(rows),
               "mean_words": sum(r["words"] for r in rows) / len(rows), "seconds": round(time.time() - started, 1),
               "signals": signals.aggregate([r["response"] for r in rows], [r["language"] for r in rows],
                                            [r["finish_reason"] for r in rows])}
    artifacts.write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("answers", "length_score", "mean_words", "seconds")}))


if __name__ == "__main__":
    main()
