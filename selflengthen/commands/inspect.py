"""`python -m selflengthen inspect [RUN ...]`: the per-iteration table of one or more runs
(length curves, token accounting, and each benchmark's held-out evaluation when the run
has one), each length beside its judge-free quality signals (core/signals.py), and a PNG
of the curves with a quality panel; per benchmark, a PNG of the signals along the outputs
(by segment, one line per iteration). Several runs -- or a Hydra sweep's folder, which
holds one run per job -- are overlaid in one table and one plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from selflengthen.core.errors import UserError
from selflengthen.evaluation import in_run
from selflengthen.store import artifacts
from selflengthen.store.status import describe, read_status

CURVES = [("generator_first_try", "generator (first try)"), ("initial", "initial (kept)"),
          ("extended", "extended (kept)")]
# the quality signals shown beside the lengths: (key of core/signals.aggregate, format, plot style)
QUALITY = (("distinct_3", "{:.2f}", "-"), ("repeated_ngram_rate", "{:.3f}", "--"), ("compression_ratio", "{:.2f}", ":"))
QUALITY_HEAD = "d3/rep/zip"


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").exists() and path.is_dir() and not _hidden(path / "config.yaml")


def _hidden(config: Path) -> bool:
    """Hydra's own logs keep a config.yaml in a `.hydra/` folder: not a run."""
    return config.parent.name.startswith(".")


def find_runs(specs: list[str], iterations_dir: Path) -> list[artifacts.RunPaths]:
    """Runs by folder or name; a folder holding runs (a sweep) expands to all of them; by
    default the most recently changed run."""
    if not specs:
        runs = sorted(iterations_dir.glob("**/config.yaml"), key=lambda p: p.stat().st_mtime)
        runs = [p for p in runs if not _hidden(p)]
        if not runs:
            raise UserError(f"no runs under {iterations_dir}/; start one with `python -m selflengthen run` "
                            f"or pass --iterations-dir")
        return [artifacts.RunPaths(max(runs, key=lambda p: max(f.stat().st_mtime for f in p.parent.rglob("*"))).parent)]
    found = []
    for spec in specs:
        for candidate in (Path(spec), iterations_dir / spec):
            if _is_run(candidate):
                found.append(artifacts.RunPaths(candidate))
                break
            if candidate.is_dir() and (members := sorted(p.parent for p in candidate.glob("*/config.yaml"))):
                found += [artifacts.RunPaths(p) for p in members]  # a sweep folder: every job's run
                break
        else:
            known = sorted(str(p.parent.relative_to(iterations_dir)) for p in iterations_dir.glob("**/config.yaml")
                           if not _hidden(p))
            raise UserError(f"no run {spec!r} under {iterations_dir}/ (runs there: {', '.join(known) or 'none'}); "
                            f"give one of those names, a run folder or a sweep folder")
    return found


def load_metrics(paths: artifacts.RunPaths) -> list[dict]:
    return [artifacts.read_json(it.metrics) for it in paths.iterations() if it.k >= 1 and it.metrics.exists()]


def _fmt(x, spec="{:.0f}"):
    return "-" if x is None else spec.format(x)


def benchmarks_of(evals: dict[int, dict]) -> list[str]:
    """The benchmarks a run's evaluations cover, sorted."""
    return sorted({b for per in evals.values() for b in per})


def quality_cell(signals: dict | None) -> str:
    """"distinct-3/repeated-n-gram rate/compression ratio" of a set's signals, "-" without."""
    if not signals:
        return "-"
    return "/".join(_fmt(signals.get(key), spec) for key, spec, _ in QUALITY)


def table(rows: list[dict], evals: dict[int, dict] | None = None, run_label: str | None = None) -> str:
    evals = evals or {}
    benches = benchmarks_of(evals)
    head = (["run"] if run_label else []) + ["iter", "instr", "gen 1st try", "initial", "extended", "ext/init",
                                             f"ext {QUALITY_HEAD}", "QC gen", "ext accept", "loss gen", "loss ext",
                                             "tok/s", "seconds"]
    head += [f"{b} words" for b in benches] + [f"{b} {QUALITY_HEAD}" for b in benches]
    head += [f"{b} score" for b in benches]
    judged = [b for b in benches if any(per.get(b, {}).get("quality") is not None for per in evals.values())]
    head += [f"{b} {part}" for b in judged for part in ("quality", "total")]  # with a judge: S_q and S beside S_l
    head += [f"{b} verdict/empty/cut" for b in benches]
    lines = [head]
    iterations = sorted({m["iteration"] for m in rows} | set(evals))
    by_k = {m["iteration"]: m for m in rows}
    for k in iterations:
        m = by_k.get(k)
        cells = [run_label] if run_label else []
        if m is None:  # iteration 0: the base model, evaluated only
            cells += [str(k)] + ["-"] * 12
        else:
            w, acc, tr = m["words"], m["acceptance"], m.get("training", {})
            cells += [
                str(k), str(m["counts"]["instructions"]), _fmt(w["generator_first_try"]["mean"]),
                f"{_fmt(w['initial']['mean'])} (n={w['initial']['n']})",
                f"{_fmt(w['extended']['mean'])} (n={w['extended']['n']})",
                _fmt(w["growth_ratio"]["mean"], "{:.2f}"), quality_cell((m.get("signals") or {}).get("extended")),
                _fmt(acc["generate_quality"], "{:.0%}"), _fmt(acc["extend_attempts"], "{:.0%}"),
                _fmt(tr.get("generator", {}).get("train_loss"), "{:.3f}"),
                _fmt(tr.get("extender", {}).get("train_loss"), "{:.3f}"),
                _fmt((m.get("tokens") or {}).get("tokens_per_second")),
                _fmt(sum(v for v in m["seconds"].values() if v)),
            ]
        per = evals.get(k, {})
        cells += [_fmt(per.get(b, {}).get("mean_words")) for b in benches]
        cells += [quality_cell(per.get(b, {}).get("signals")) for b in benches]
        cells += [_fmt(per.get(b, {}).get("length_score"), "{:.2f}") for b in benches]
        cells += [_fmt(per.get(b, {}).get(part), "{:.2f}") for b in judged for part in ("quality", "total")]
        cells += [_not_writing(per.get(b, {}).get("not_writing")) for b in benches]
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _not_writing(counts: dict | None) -> str:
    """"verdict/empty/cut" counts of an evaluation, "-" for one recorded before they were."""
    return "-" if not counts else f"{counts['verdict']}/{counts['empty']}/{counts['cut']}"


LEGEND = ("(mean words per response; QC gen = generator quality-check pass rate; tok/s = generated tokens per "
          "second over augment+generate+extend; <benchmark> words/score = held-out eval of the iteration's "
          "generator, iteration 0 = base model; verdict/empty/cut = its responses that are a bare yes/no, empty, "
          "or cut at the token cap; d3/rep/zip = judge-free quality of those texts: mean distinct-3, repeated n-gram "
          "rate, compression ratio (lower, higher, lower = more repetitive; docs/quality.md))")


def quality_series(runs: list[tuple[str, list[dict], dict]]) -> list[tuple[str, list[int], dict[str, list]]]:
    """What the quality panel draws: (name, iterations, {signal: values}) for the kept extended
    texts of each run (metrics.json `signals.extended`) and for each benchmark it evaluated
    (summary.json `signals`); a value is None where the file has none."""
    many = len(runs) > 1
    out = []
    for label, rows, evals in runs:
        prefix = f"{label}: " if many else ""
        sets = [(f"{prefix}extended (kept)", [(m["iteration"], (m.get("signals") or {}).get("extended"))
                                              for m in rows])]
        for bench in benchmarks_of(evals):
            sets.append((f"{prefix}{bench} (held-out)", [(k, evals[k][bench].get("signals"))
                                                         for k in sorted(evals) if bench in evals[k]]))
        for name, points in sets:
            if any(found for _, found in points):
                out.append((name, [k for k, _ in points],
                            {key: [(found or {}).get(key) for _, found in points] for key, _, _ in QUALITY}))
    return out


def _nan(values: list) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _length_panel(ax, runs: list[tuple[str, list[dict], dict]], title: str) -> None:
    many = len(runs) > 1
    for label, rows, _ in runs:
        ks = [m["iteration"] for m in rows]
        for key, name in CURVES:
            stats = [m["words"][key] for m in rows]
            line, = ax.plot(ks, _nan([s["mean"] for s in stats]), marker="o",
                            label=f"{label}: {name}" if many else name)
            if not many:
                ax.fill_between(ks, _nan([s["p10"] for s in stats]), _nan([s["p90"] for s in stats]),
                                color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("words per response" + ("" if many else " (mean, p10-p90 band)"))
    ax.set_title(title)


def _eval_panel(ax, runs: list[tuple[str, list[dict], dict]]) -> None:
    many = len(runs) > 1
    for label, _, evals in runs:
        for bench in benchmarks_of(evals):
            ks = sorted(k for k in evals if bench in evals[k])
            ax.plot(ks, [evals[k][bench]["mean_words"] for k in ks], marker="s",
                    label=f"{label}: {bench}" if many else bench)
    ax.set_xlabel("iteration (0 = base model)")
    ax.set_ylabel("held-out mean words")
    ax.set_title("held-out evaluation of the generator")


def _quality_panel(ax, series: list[tuple[str, list[int], dict[str, list]]]) -> None:
    """One colour per set of texts, one line style per signal (QUALITY)."""
    for i, (name, ks, values) in enumerate(series):
        for j, (key, _, style) in enumerate(QUALITY):
            ax.plot(ks, _nan(values[key]), style, marker=".", color=f"C{i % 10}", label=name if j == 0 else None)
    for key, _, style in QUALITY:  # the legend's key to the line styles
        ax.plot([], [], style, color="black", label=key.replace("_", " "))
    ax.set_xlabel("iteration (0 = base model)")
    ax.set_ylabel("mean signal")
    ax.set_title("judge-free quality (distinct-3, repeated n-grams, compression)")


def plot(runs: list[tuple[str, list[dict], dict]], out: Path, title: str) -> Path:
    """The length curves, the held-out lengths when a run evaluates, and the quality signals
    of both when a run has them: one panel each, side by side."""
    import matplotlib  # deferred: matplotlib only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = quality_series(runs)
    panels = [lambda ax: _length_panel(ax, runs, title)]
    if any(evals for _, _, evals in runs):
        panels.append(lambda ax: _eval_panel(ax, runs))
    if series:
        panels.append(lambda ax: _quality_panel(ax, series))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), dpi=120, squeeze=False)
    for draw, ax in zip(panels, axes[0]):
        draw(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def segment_plots(paths: artifacts.RunPaths, evals: dict[int, dict]) -> list[Path]:
    """Per benchmark the run evaluated: its signals by segment of the outputs, one line per
    iteration (evaluation/plots.plot_segments), in paths.segment_plot(benchmark)."""
    from selflengthen.evaluation import plots  # deferred: matplotlib only when a plot is drawn

    out = []
    for bench in benchmarks_of(evals):
        by_k = {k: per[bench]["signals"] for k, per in evals.items() if (per.get(bench) or {}).get("signals")}
        judged = {k: per[bench]["quality_by_segment"] for k, per in evals.items()
                  if (per.get(bench) or {}).get("quality_by_segment")}
        if by_k:
            out.append(plots.plot_segments(by_k, paths.segment_plot(bench),
                                           f"{paths.root.name}: {bench} along the outputs", judged))
    return out


def inspect_runs(specs: list[str], iterations_dir: Path) -> tuple[str, Path | None]:
    runs = find_runs(specs, iterations_dir)
    loaded = [(p, load_metrics(p), in_run.load(p)) for p in runs]
    if not any(rows or evals for _, rows, evals in loaded):
        return f"run {runs[0].root}: no iteration has finished yet" + live_status(runs[0]), None
    if len(runs) == 1:
        p, rows, evals = loaded[0]
        png = plot([(p.root.name, rows, evals)], p.plot, f"Self-Lengthen length curves: {p.root.name}")
        return f"run {p.root}" + live_status(p) + "\n" + table(rows, evals) + "\n" + LEGEND + _segments(p, evals), png
    labels = _labels([p.root for p in runs])
    text = "\n\n".join(table(rows, evals, run_label=label) for label, (_, rows, evals) in zip(labels, loaded))
    common = Path(*_common_parts([p.root for p in runs]))
    out = (common if common.is_dir() else iterations_dir) / "compare_length_curves.png"
    png = plot([(label, rows, evals) for label, (_, rows, evals) in zip(labels, loaded)], out,
               f"{len(runs)} runs")
    segments = "".join(_segments(p, evals) for p, _, evals in loaded)
    return f"{len(runs)} runs under {common}\n" + text + "\n" + LEGEND + segments, png


def _segments(paths: artifacts.RunPaths, evals: dict[int, dict]) -> str:
    """Draws the run's segment plots; a line naming them (nothing when there are none)."""
    drawn = segment_plots(paths, evals)
    return f"\nsignals by segment: {', '.join(str(p) for p in drawn)}" if drawn else ""


def live_status(paths: artifacts.RunPaths) -> str:
    """A line on what the run is doing now, from its status.json (running, stale, failed);
    nothing for a finished run or one from before status files."""
    status = read_status(paths.root)
    if not status or status.get("state") == "finished":
        return ""
    return "\n" + describe(status)


def _common_parts(roots: list[Path]) -> list[str]:
    parts = [r.resolve().parts for r in roots]
    common = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return common or ["."]


def _labels(roots: list[Path]) -> list[str]:
    common = len(_common_parts(roots))
    return ["/".join(r.resolve().parts[common:]) or r.name for r in roots]



def main(argv: list[str]) -> None:
    """The verb's entry (config/verbs.py): `inspect [RUN ...] [--iterations-dir DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m selflengthen inspect",
                                     description="Per-iteration length table and plot of a run.")
    parser.add_argument("runs", nargs="*", help="run names under the iterations folder, run folders, or a "
                        "sweep folder (its runs are overlaid); default: the most recent run")
    parser.add_argument("--iterations-dir", default="iterations", type=Path)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    text, png = inspect_runs(args.runs, args.iterations_dir)
    print(text)
    if png:
        print(f"plot: {png}")
