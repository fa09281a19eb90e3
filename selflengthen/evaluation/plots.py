"""Figures of a benchmark run, drawn off-screen with matplotlib's Agg canvas (no display,
no pyplot state): LongBench-Write's required vs output length, LongWrite-Ruler's output
length per requested length, LonGen's score by type, range and language, and the
judge-free quality signals along the outputs, by segment, one line per iteration.

They read prediction rows (see scoring.py: `length`, `words`, `language`) or, for
LonGen and the segments, summaries of `scoring.summarize`. Each writes a PNG and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from selflengthen.core import signals

_LANGUAGE_COLORS = {"en": "tab:blue", "zh": "tab:red"}
_FLOOR = 1  # log axes cannot show 0 words: an empty output is drawn at 1


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def _log_limits(values: list[float]) -> tuple[float, float]:
    if not values:
        raise ValueError("nothing to plot: no prediction rows")
    return min(values) * 0.8, max(values) * 1.25


def plot_longbench(rows: list[dict], out: str | Path, title: str = "LongBench-Write") -> Path:
    """Required length (`length`) against output length (`words`) on log-log axes, one
    point per row coloured by `language`, with the diagonal output = required."""
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    lo, hi = _log_limits([r["length"] for r in rows] + [max(r["words"], _FLOOR) for r in rows])
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="output = required")
    for language in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == language]
        ax.scatter([r["length"] for r in mine], [max(r["words"], _FLOOR) for r in mine], s=60, alpha=0.4,
                   color=_LANGUAGE_COLORS.get(language), label=language)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel="Required length (words)", ylabel="Output length (words)")
    ax.legend(loc="upper left")
    return _save(fig, out)


def _mean_words_by_length(rows: list[dict]) -> tuple[list[int], list[float]]:
    lengths = sorted({r["length"] for r in rows})
    return lengths, [max(fmean(r["words"] for r in rows if r["length"] == x), _FLOOR) for x in lengths]


def plot_ruler(rows: list[dict], out: str | Path, title: str = "LongWrite-Ruler") -> Path:
    """Output length (`words`) reached per requested length (`length`): every row as a
    point, the mean per requested length as a line, and the diagonal, on log-log axes."""
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    requested = sorted({r["length"] for r in rows})
    lo, hi = _log_limits(requested + [max(r["words"], _FLOOR) for r in rows])
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="output = requested")
    for language in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == language]
        color = _LANGUAGE_COLORS.get(language)
        ax.scatter([r["length"] for r in mine], [max(r["words"], _FLOOR) for r in mine], s=30, alpha=0.35,
                   color=color)
        ax.plot(*_mean_words_by_length(mine), "o-", color=color, label=f"{language} (mean)")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel="Requested length (words)", ylabel="Output length (words)")
    ax.legend(loc="upper left")
    return _save(fig, out)


def plot_longen(summary: dict, out: str | Path, title: str = "LonGen length following") -> Path:
    """Grouped bars from `summary["length_score"]["by_language_type_range"]`: one panel
    per language, a group per constraint type, a bar per length range (score 0..1)."""
    if not summary.get("length_score"):
        raise ValueError("nothing to plot: the summary has no scored rows")
    grid: dict = summary["length_score"]["by_language_type_range"]
    languages = list(grid)
    ranges = sorted({rng for kinds in grid.values() for by_range in kinds.values() for rng in by_range})
    fig = Figure(figsize=(5 * len(languages), 4.5))
    axes = [fig.add_subplot(1, len(languages), i + 1) for i in range(len(languages))]
    width = 0.8 / max(len(ranges), 1)
    for ax, language in zip(axes, languages, strict=True):
        by_kind = grid[language]  # type -> range -> score
        kinds = list(by_kind)
        for j, rng in enumerate(ranges):
            offset = (j - (len(ranges) - 1) / 2) * width
            present = [i for i, kind in enumerate(kinds) if rng in by_kind[kind]]
            if present:
                ax.bar([i + offset for i in present], [by_kind[kinds[i]][rng] for i in present], width=width,
                       label=rng)
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set(ylim=(0, 1.05), title=f"{title} ({language})", ylabel="Length score")
        ax.legend(title="range", fontsize="small")
    return _save(fig, out)


# the signals drawn by segment, with the direction a reader should look for
SEGMENT_SIGNALS = (("distinct_3", "distinct-3 (lower = repetitive)"),
                   ("repeated_ngram_rate", "repeated n-gram rate (higher = repetitive)"),
                   ("compression_ratio", "compression ratio (lower = repetitive)"))


def plot_segments(by_iteration: dict[int, dict], out: str | Path, title: str,
                  judged: dict[int, list] | None = None) -> Path:
    """Quality signals along the outputs: a panel per signal of SEGMENT_SIGNALS, x = the
    segment (1 = each output's first piece, K = its last; core/signals.segments), one line
    per iteration. by_iteration: {iteration: an evaluation summary's `signals`}; judged
    (with a judge): {iteration: the judge's mean score of each part}, one more panel."""
    panels = [(name, label, lambda summary, name=name: signals.segment_series(summary, name))
              for name, label in SEGMENT_SIGNALS]
    series_of = {name: by_iteration for name, _ in SEGMENT_SIGNALS}
    if judged:
        panels.append(("judge", "judge's score of the part (0-100)", lambda scores: list(scores)))
        series_of["judge"] = judged
    fig = Figure(figsize=(5 * len(panels), 4))
    for i, (name, label, series_for) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k, summary in sorted(series_of[name].items()):
            series = series_for(summary)
            ax.plot(range(1, len(series) + 1), [math.nan if v is None else v for v in series], marker="o",
                    label=f"iteration {k}" + (" (base)" if k == 0 else ""))
        ax.set(xlabel="segment of each output (1 = start)", ylabel=label, title=title if i == 0 else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, out)
