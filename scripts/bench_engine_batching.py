"""Benchmark: one batched `generate` call (what every stage does) against the same
requests sent one at a time (the per-request pattern of the reference's HTTP client),
on the same in-process vLLM engine and model.

    python scripts/bench_engine_batching.py [--model PATH] [--requests 32] [--max-tokens 256]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded tiny model, built if needed)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "selflengthen"))
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()

    from selflengthen.engines import Request, Sampling
    from selflengthen.engines.vllm_engine import VllmEngine
    from selflengthen.tiny_model import ensure_tiny_model

    model = args.model or str(ensure_tiny_model(Path(args.cache_dir)))
    engine = VllmEngine(model, {}, {"max_model_len": 4096, "dtype": "float32", "enforce_eager": True,
                                    "gpu_memory_utilization": 0.2, "seed": 0}, ["<|im_end|>"])
    sampling = Sampling(max_tokens=args.max_tokens, stop=("---", "\n\n\n"))
    requests = [Request([{"role": "user", "content": f"Write about topic number {i}."}]) for i in range(args.requests)]
    engine.generate(requests[:2], sampling)  # warm-up

    t = time.perf_counter()
    one_by_one = [engine.generate([r], sampling)[0] for r in requests]
    single = time.perf_counter() - t
    t = time.perf_counter()
    batched = engine.generate(requests, sampling)
    batch = time.perf_counter() - t

    tok = engine.tokenizer
    n_single = sum(len(tok.encode(x)) for x in one_by_one)
    n_batch = sum(len(tok.encode(x)) for x in batched)
    print(f"{'mode':>12}  {'seconds':>8}  {'tokens':>7}  {'tokens/s':>9}")
    print(f"{'one by one':>12}  {single:>8.2f}  {n_single:>7}  {n_single / single:>9.0f}")
    print(f"{'batched':>12}  {batch:>8.2f}  {n_batch:>7}  {n_batch / batch:>9.0f}")
    print(f"batched / one-by-one throughput: {(n_batch / batch) / (n_single / single):.1f}x")


if __name__ == "__main__":
    main()
