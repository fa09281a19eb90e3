"""Benchmark: length-biased resampling, ours (sort + searchsorted, O(n log n)) against the
reference's shape (a list search per item, O(n^2)), side by side on the same lengths.

    python scripts/bench_drop_short.py [--sizes 1000 10000 30000] [--big 1000000]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np

from selflengthen.core.resample import drop_short_mask


def quadratic_baseline(lengths: list[int], seed: int) -> list[bool]:
    """The reference's approach: for each item, search the sorted list for its index."""
    rng = random.Random(seed)
    ordered = sorted(lengths)
    n = len(lengths)
    return [rng.random() > 2 * (1 - ordered.index(x) / n) ** 3 for x in lengths]


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    parser.add_argument("--big", type=int, default=1_000_000, help="ours alone at this size (0 to skip)")
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest measurement, to check that the script runs: --sizes 200 --big 0")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.big = [200], 0
    print(f"{'n':>10}  {'baseline s':>11}  {'ours s':>9}  {'speed-up':>9}")
    for n in args.sizes:
        lengths = np.random.default_rng(0).integers(100, 20_000, n).tolist()
        base = timed(quadratic_baseline, lengths, 0)
        ours = min(timed(drop_short_mask, lengths, 0) for _ in range(3))
        print(f"{n:>10}  {base:>11.3f}  {ours:>9.4f}  {base / ours:>8.0f}x")
    if args.big:
        lengths = np.random.default_rng(0).integers(100, 20_000, args.big)
        ours = min(timed(drop_short_mask, lengths, 0) for _ in range(3))
        print(f"{args.big:>10}  {'(hours)':>11}  {ours:>9.4f}  {'-':>9}")


if __name__ == "__main__":
    main()
