"""`python -m selflengthen inspect [RUN ...]`: the per-iteration table of one or more runs
(length curves, token accounting, and each benchmark's held-out evaluation when the run
has one) and a PNG of the curves. Several runs -- or a Hydra sweep's folder, which holds
one run per job -- are overlaid in one table and one plot."""
from __future__ import annotations

from pathlib import Path

from selflengthen.core.errors import UserError
from selflengthen.evaluation import in_run
from selflengthen.store import artifacts
from selflengthen.store.status import describe, read_status

CURVES = [("generator_first_try", "generator (first try)"), ("initial", "initial (kept)"),
          ("extended", "extended (kept)")]


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


def table(rows: list[dict], evals: dict[int, dict] | None = None, run_label: str | None = None) -> str:
    evals = evals or {}
    benches = sorted({b for per in evals.values() for b in per})
    head = (["run"] if run_label else []) + ["iter", "instr", "gen 1st try", "initial", "extended", "ext/init",
                                             "QC gen", "ext accept", "loss gen", "loss ext", "tok/s", "seconds"]
    head += [f"{b} words" for b in benches] + [f"{b} score" for b in benches]
    head += [f"{b} verdict/empty/cut" for b in benches]
    lines = [head]
    iterations = sorted({m["iteration"] for m in rows} | set(evals))
    by_k = {m["iteration"]: m for m in rows}
    for k in iterations:
        m = by_k.get(k)
        cells = [run_label] if run_label else []
        if m is None:  # iteration 0: the base model, evaluated only
            cells += [str(k)] + ["-"] * 11
        else:
            w, acc, tr = m["words"], m["acceptance"], m.get("training", {})
            cells += [
                str(k), str(m["counts"]["instructions"]), _fmt(w["generator_first_try"]["mean"]),
                f"{_fmt(w['initial']['mean'])} (n={w['initial']['n']})",
                f"{_fmt(w['extended']['mean'])} (n={w['extended']['n']})",
                _fmt(w["growth_ratio"]["mean"], "{:.2f}"),
                _fmt(acc["generate_quality"], "{:.0%}"), _fmt(acc["extend_attempts"], "{:.0%}"),
                _fmt(tr.get("generator", {}).get("train_loss"), "{:.3f}"),
                _fmt(tr.get("extender", {}).get("train_loss"), "{:.3f}"),
                _fmt((m.get("tokens") or {}).get("tokens_per_second")),
                _fmt(sum(v for v in m["seconds"].values() if v)),
            ]
        per = evals.get(k, {})
        cells += [_fmt(per.get(b, {}).get("mean_words")) for b in benches]
        cells += [_fmt(per.get(b, {}).get("length_score"), "{:.2f}") for b in benches]
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
          "or cut at the token cap)")


def plot(runs: list[tuple[str, list[dict], dict]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_eval = any(evals for _, _, evals in runs)
    fig, axes = plt.subplots(1, 2 if with_eval else 1, figsize=(12 if with_eval else 7, 4.2), dpi=120, squeeze=False)
    ax = axes[0][0]
    many = len(runs) > 1
    for label, rows, _ in runs:
        ks = [m["iteration"] for m in rows]
        for key, name in CURVES:
            stats = [m["words"][key] for m in rows]
            means = [s["mean"] if s["mean"] is not None else float("nan") for s in stats]
            line, = ax.plot(ks, means, marker="o", label=f"{label}: {name}" if many else name)
            if not many:
                lo = [s["p10"] if s["p10"] is not None else float("nan") for s in stats]
                hi = [s["p90"] if s["p90"] is not None else float("nan") for s in stats]
                ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("words per response" + ("" if many else " (mean, p10-p90 band)"))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if with_eval:
        ax2 = axes[0][1]
        for label, _, evals in runs:
            for bench in sorted({b for per in evals.values() for b in per}):
                ks = sorted(k for k in evals if bench in evals[k])
                ax2.plot(ks, [evals[k][bench]["mean_words"] for k in ks], marker="s",
                         label=f"{label}: {bench}" if many else bench)
        ax2.set_xlabel("iteration (0 = base model)")
        ax2.set_ylabel("held-out mean words")
        ax2.set_title("held-out evaluation of the generator")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for a in axes[0]:  # iterations are whole numbers
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def inspect_runs(specs: list[str], iterations_dir: Path) -> tuple[str, Path | None]:
    runs = find_runs(specs, iterations_dir)
    loaded = [(p, load_metrics(p), in_run.load(p)) for p in runs]
    if not any(rows or evals for _, rows, evals in loaded):
        return f"run {runs[0].root}: no iteration has finished yet" + live_status(runs[0]), None
    if len(runs) == 1:
        p, rows, evals = loaded[0]
        png = plot([(p.root.name, rows, evals)], p.plot, f"Self-Lengthen length curves: {p.root.name}")
        return f"run {p.root}" + live_status(p) + "\n" + table(rows, evals) + "\n" + LEGEND, png
    labels = _labels([p.root for p in runs])
    text = "\n\n".join(table(rows, evals, run_label=label) for label, (_, rows, evals) in zip(labels, loaded))
    common = Path(*_common_parts([p.root for p in runs]))
    out = (common if common.is_dir() else iterations_dir) / "compare_length_curves.png"
    png = plot([(label, rows, evals) for label, (_, rows, evals) in zip(labels, loaded)], out,
               f"{len(runs)} runs")
    return f"{len(runs)} runs under {common}\n" + text + "\n" + LEGEND, png


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

