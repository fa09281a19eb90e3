"""Per-iteration metrics (metrics.json): counts, word-length statistics of every
artifact, each filter's acceptance rate, training loss and stage wall times."""
from __future__ import annotations

import numpy as np

from selflengthen.core import signals
from selflengthen.core.text import count_words
from selflengthen.store import artifacts


def length_stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {"n": len(values), "mean": round(float(arr.mean()), 1), "median": float(np.median(arr)),
            "p10": float(np.percentile(arr, 10)), "p90": float(np.percentile(arr, 90)), "max": int(arr.max())}


def _ratio(num, den):
    return round(num / den, 4) if den else None


def token_accounting(it: artifacts.IterationPaths) -> dict:
    """Requests, tokens and generated tokens per second of each generation stage (from
    manifests/engine_usage.json), and their sum: what the iteration cost the engine."""
    path = it.stage_manifest("engine_usage")
    usage = artifacts.read_json(path) if path.exists() else {}
    stages = {s: {k: u.get(k) for k in ("requests", "prompt_tokens", "completion_tokens", "seconds",
                                        "tokens_per_second", "replicas")}
              for s, u in usage.items() if isinstance(u, dict) and "completion_tokens" in u}
    total = {k: sum(v[k] or 0 for v in stages.values()) for k in ("requests", "prompt_tokens", "completion_tokens",
                                                                   "seconds")}
    total["tokens_per_second"] = round(total["completion_tokens"] / total["seconds"], 1) if total["seconds"] else None
    return {"stages": stages, **total}


def kept_signals(rows: list[dict]) -> dict:
    """Set-level quality signals of kept rows' responses, and their means per quarter of each
    text (distinct-n, repeated n-gram rate, compression ratio, words; core/signals.py)."""
    return signals.set_summary([r["response"] for r in rows], [r.get("language") for r in rows])


def iteration_metrics(it: artifacts.IterationPaths, stage_names: list[str]) -> dict:
    """Everything the length curves need, read back from the iteration's artifacts; the
    seconds of each stage in `stage_names` (the loop's list) that has its manifest."""
    m = {s: artifacts.read_json(it.stage_manifest(s)) for s in stage_names if it.stage_done(s)}
    instructions = artifacts.read_jsonl(it.instructions)
    initial = artifacts.read_jsonl(it.initial)
    extended = artifacts.read_jsonl(it.extended)
    gen, ext = m["generate"]["counts"], m["extend"]["counts"]
    training = {role: {k: info.get(k) for k in ("examples", "steps", "train_loss", "loss_first", "loss_last",
                                                "seconds", "init_adapter", "world_size", "resumed_from_step")}
                for role, info in m["train"].get("roles", {}).items()}
    return {
        "iteration": it.k,
        "counts": {"instructions": len(instructions), "initial": len(initial), "extended": len(extended),
                   "sft_generator": m["curate"]["counts"]["generator"],
                   "sft_extender": m["curate"]["counts"]["extender"]},
        "words": {
            "instructions": length_stats([count_words(r["instruction"]) for r in instructions]),
            "generator_first_try": length_stats(m["generate"]["first_try_words"]),
            "initial": length_stats([r["words"] for r in initial]),
            "extended": length_stats([r["words"] for r in extended]),
            "growth_ratio": length_stats([round(r["words"] / r["initial_words"], 3) for r in extended
                                          if r["initial_words"]]),  # an AgentWrite row may have no draft
            "extended_by_method": {method: length_stats([r["words"] for r in extended
                                                         if r.get("method", "extend") == method])
                                   for method in sorted({r.get("method", "extend") for r in extended})},
        },
        "synth": ext.get("synth", "extend"),
        "acceptance": {
            "augment": m["augment"].get("acceptance", {}),
            "generate_quality": gen["quality"]["pass_rate"],
            "generate_samples": _ratio(gen["passed_quality"], gen["samples_wanted"]),
            "generate_drop_short": _ratio(gen["kept_after_drop_short"], gen["passed_quality"]),
            "extend_quality": ext["quality"]["pass_rate"],
            "extend_attempts": ext["attempt_accept_rate"],
            "extend_drop_short": _ratio(ext["kept_after_drop_short"], ext["accepted"]),
        },
        "quality_failures": {"generate": gen["quality"]["failures"], "extend": ext["quality"]["failures"]},
        # judge-free quality of the kept texts (core/signals.py): longer, and not worse?
        "signals": {"initial": kept_signals(initial), "extended": kept_signals(extended)},
        "training": training,
        "tokens": token_accounting(it),
        "seconds": {s: m[s]["seconds"] for s in m},
        "adapters_used": {"generator": gen.get("adapter"), "extender": ext.get("adapter")},
    }


def why_empty(it: artifacts.IterationPaths) -> str:
    """Which stage of iteration k accepted nothing, and how many items each filter rejected
    (from the stage manifests), with the settings that let more through."""
    def counts(stage: str) -> dict:
        path = it.stage_manifest(stage)
        return artifacts.read_json(path).get("counts", {}) if path.exists() else {}

    a, g, e = counts("augment"), counts("generate"), counts("extend")
    if a and not a.get("instructions"):
        return (f"augment accepted 0 instructions of {a.get('drawn', 0)} drawn ({a.get('rejected_words', 0)} outside "
                f"loop.augment.min_words..max_words, {a.get('rejected_duplicate', 0)} duplicates, "
                f"{a.get('rejected_judge', 0)} refused by the judge); raise loop.augment.tries or widen the "
                f"word bounds")
    if g and not g.get("kept_after_drop_short"):
        q = g.get("quality") or {}
        return (f"generate kept 0 of {g.get('samples_wanted', 0)} samples ({g.get('passed_quality', 0)} passed the "
                f"quality check; failures by rule: {q.get('failures', {})}); raise loop.generate.retries or relax "
                f"loop.quality")
    if e and not e.get("kept_after_drop_short"):
        q = e.get("quality") or {}
        return (f"extend accepted 0 of {e.get('attempts', 0)} attempts (none grew past loop.extend.min_growth and "
                f"passed the quality check; failures by rule: {q.get('failures', {})}); raise loop.extend.retries "
                f"or loop.extend.rounds, or lower loop.extend.min_growth")
    if e:  # rows were kept, yet a role has none: only the extender's can be empty then (stages/curate.py)
        return (f"the {e['kept_after_drop_short']} accepted row(s) are AgentWrite texts whose instruction kept no "
                f"generator draft, and such a row trains the generator only; raise loop.generate.retries, or use loop.synth=both")
    return "no extension was accepted"
