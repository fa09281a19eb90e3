"""`python -m selflengthen inspect [RUN]`: the per-iteration length table of a run and a
PNG of its length curves (mean words with the p10-p90 band per artifact)."""
from __future__ import annotations

from pathlib import Path

from selflengthen import artifacts
from selflengthen.errors import UserError

CURVES = [("generator_first_try", "generator (first try)"), ("initial", "initial (kept)"),
          ("extended", "extended (kept)")]


def find_run(run: str | None, iterations_dir: Path) -> artifacts.RunPaths:
    """A run by folder path or name; by default the most recently changed run."""
    if run and Path(run).is_dir() and (Path(run) / "config.yaml").exists():
        return artifacts.RunPaths(Path(run))
    if run:
        candidate = iterations_dir / run
        if not (candidate / "config.yaml").exists():
            known = sorted(p.parent.name for p in iterations_dir.glob("*/config.yaml"))
            raise UserError(f"no run {run!r} under {iterations_dir}/ (runs there: {', '.join(known) or 'none'}); "
                            f"give one of those names or a run folder")
        return artifacts.RunPaths(candidate)
    runs = sorted(iterations_dir.glob("*/config.yaml"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no runs under {iterations_dir}/; start one with `python -m selflengthen run` "
                        f"or pass --iterations-dir")
    return artifacts.RunPaths(max(runs, key=lambda p: max(f.stat().st_mtime for f in p.parent.rglob("*"))).parent)


def load_metrics(paths: artifacts.RunPaths) -> list[dict]:
    return [artifacts.read_json(it.metrics) for it in paths.iterations() if it.metrics.exists()]


def table(rows: list[dict]) -> str:
    head = ["iter", "instr", "gen 1st try", "initial", "extended", "ext/init", "QC gen", "ext accept",
            "loss gen", "loss ext", "seconds"]
    lines = [head]

    def fmt(x, spec="{:.0f}"):
        return "-" if x is None else spec.format(x)

    for m in rows:
        w, acc, tr = m["words"], m["acceptance"], m.get("training", {})
        lines.append([
            str(m["iteration"]), str(m["counts"]["instructions"]),
            f"{fmt(w['generator_first_try']['mean'])}",
            f"{fmt(w['initial']['mean'])} (n={w['initial']['n']})",
            f"{fmt(w['extended']['mean'])} (n={w['extended']['n']})",
            fmt(w["growth_ratio"]["mean"], "{:.2f}"),
            fmt(acc["generate_quality"], "{:.0%}"), fmt(acc["extend_attempts"], "{:.0%}"),
            fmt(tr.get("generator", {}).get("train_loss"), "{:.3f}"),
            fmt(tr.get("extender", {}).get("train_loss"), "{:.3f}"),
            fmt(sum(v for v in m["seconds"].values() if v)),
        ])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n(mean words per response; QC gen = generator quality-check pass rate)"


def plot(rows: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ks = [m["iteration"] for m in rows]
    for key, label in CURVES:
        stats = [m["words"][key] for m in rows]
        means = [s["mean"] if s["mean"] is not None else float("nan") for s in stats]
        line, = ax.plot(ks, means, marker="o", label=label)
        lo = [s["p10"] if s["p10"] is not None else float("nan") for s in stats]
        hi = [s["p90"] if s["p90"] is not None else float("nan") for s in stats]
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("words per response (mean, p10-p90 band)")
    ax.set_xticks(ks)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def inspect(run: str | None, iterations_dir: Path) -> tuple[str, Path | None]:
    paths = find_run(run, iterations_dir)
    rows = load_metrics(paths)
    if not rows:
        return f"run {paths.root}: no iteration has finished yet", None
    png = plot(rows, paths.plot, f"Self-Lengthen length curves: {paths.root.name}")
    return f"run {paths.root}\n" + table(rows), png
