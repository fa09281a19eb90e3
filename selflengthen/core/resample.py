"""Length-biased resampling ("drop short", algorithm.md 1.6).

Sort the n lengths; an item whose length first occurs at index i of the sorted list has
rank 1 - i/n and is kept when a uniform draw u in [0, 1) satisfies u > 2 * rank**3. The
shortest ~20.6% are always dropped, the longest almost always kept. O(n log n), seeded.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks(lengths: Sequence[int]) -> np.ndarray:
    """1 - i/n, i = the index where each length first occurs in the sorted lengths."""
    values = np.asarray(lengths, dtype=np.int64)
    if len(values) == 0:
        return np.zeros(0)
    first_index = np.searchsorted(np.sort(values, kind="stable"), values, side="left")
    return 1.0 - first_index / len(values)


def keep_probabilities(lengths: Sequence[int]) -> np.ndarray:
    """P(keep) for each item: max(0, 1 - 2 * rank**3)."""
    return np.clip(1.0 - 2.0 * ranks(lengths) ** 3, 0.0, 1.0)


def drop_short_mask(lengths: Sequence[int], seed: int) -> np.ndarray:
    """Boolean keep-mask over the items, drawn with numpy's PCG64 seeded by `seed`."""
    rank = ranks(lengths)
    return np.random.default_rng(seed).random(len(rank)) > 2.0 * rank**3


def drop_short(items: Sequence, lengths: Sequence[int], seed: int) -> list:
    """The items that survive length-biased resampling, in their original order."""
    mask = drop_short_mask(lengths, seed)
    return [item for item, keep in zip(items, mask) if keep]
