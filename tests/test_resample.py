import sys

import numpy as np

from selflengthen.core.resample import drop_short, drop_short_mask, keep_probabilities
from tests.conftest import REPO, run_watched


def reference_keep_probability(lengths):
    """The formula read literally: rank from the first index in the sorted list."""
    ordered = sorted(lengths)
    n = len(lengths)
    return [max(0.0, 1 - 2 * (1 - ordered.index(x) / n) ** 3) for x in lengths]


def test_keep_probabilities_match_the_formula_with_ties():
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 40, size=300).tolist()  # many ties
    assert np.allclose(keep_probabilities(lengths), reference_keep_probability(lengths))


def test_shortest_fifth_always_dropped_longest_mostly_kept():
    lengths = list(range(10_000))
    p = keep_probabilities(lengths)
    cutoff = 1 - 0.5 ** (1 / 3)  # rank**3 >= 1/2  <=>  always dropped
    assert (p[: int(10_000 * cutoff) - 1] == 0).all()
    assert p[-1] > 0.999
    masks = np.stack([drop_short_mask(lengths, seed=s) for s in range(20)])
    assert not masks[:, :2000].any()
    assert abs(masks.mean(axis=0)[5000:].mean() - p[5000:].mean()) < 0.02


def test_seeded_and_order_preserving():
    lengths = [5, 1, 9, 3, 7, 2, 8, 6, 4, 10] * 50
    items = list(range(len(lengths)))
    a, b = drop_short(items, lengths, seed=7), drop_short(items, lengths, seed=7)
    assert a == b and a == sorted(a)
    assert drop_short(items, lengths, seed=8) != a
    assert drop_short([], [], seed=0) == []


def test_a_million_items_do_not_hang():
    """Guards against a quadratic regression (which would take hours on 10^6 items); the
    speed itself is measured by scripts/bench_drop_short.py, not here."""
    code = ("import numpy as np; from selflengthen.core.resample import drop_short_mask;"
            "m = drop_short_mask(np.random.default_rng(0).integers(0, 10**5, 10**6), seed=0);"
            "print(m.mean())")
    out = run_watched([sys.executable, "-c", code], cwd=REPO)  # a hang is stopped by the progress watchdog
    assert out.returncode == 0, out.stderr[-2000:]
    kept = float(out.stdout)
    assert 0.57 < kept < 0.62  # E[keep] = integral over r of max(0, 1 - 2 r^3) = r0 - r0^4 / 2 ~ 0.595, r0 = 2^(-1/3)
