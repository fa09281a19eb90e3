"""Project one Self-Lengthen iteration to the paper's scale, with and without barriers.

Reads the measured shape of an iteration from a run (requests per sample and generated
tokens per request of each stage, the generator's quality pass rate; from
`iter_<k>/manifests/{generate,extend,engine_usage}.json`), scales it to N instructions per
language and a mean generation length, and prices it on G accelerators with two numbers
you supply for your model and hardware:

  B  aggregate decode throughput of one replica at a full batch (tokens/s)
  s  decode speed of one sequence (tokens/s): the rate at which the last, longest answer
     of a phase finishes once the batch around it has drained

Every phase of work ends with a drain: its last, longest answers (up to the cap L_max,
which some answers reach: the cut-off ones the quality check rejects) decode while the
batch around them empties, so about half of the accelerator's time for L_max / s is lost.
Without barriers (our chains) a stage drains once, at its end (new work keeps the batch
full until then), and no chain of dependent calls is longer than that:
    T = tokens / (G * B) + max(L_max / (2 s),  chain_calls * L_mean / s - tokens / (G * B))^+
With barriers (lock-step rounds: every retry round and every extension stage waits for
the slowest answer of the previous one) every phase drains:
    T = tokens / (G * B) + phases * L_max / (2 s)
The generation rounds are the expected number until every sample passed or ran out of
retries: rounds = min(retries + 1, ceil(ln(samples) / -ln(1 - pass_rate))); the extension
has attempts x rounds x 2 dependent stages (12 in the paper).

    .venv/bin/python scripts/project_scale.py --run iterations/tiny --iteration 2 \
        [--instructions 5000 --languages 2 --gpus 8 --batch-tps 2500 --seq-tps 40 ...]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def args_():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("iterations/tiny"))
    p.add_argument("--iteration", type=int, default=2, help="the measured iteration (its adapters are trained)")
    p.add_argument("--instructions", type=int, default=5000, help="per language")
    p.add_argument("--languages", type=int, default=2)
    p.add_argument("--samples", type=int, default=2, help="generator samples per instruction")
    p.add_argument("--gen-tokens", type=float, default=1300, help="mean generated tokens of a generation (~1,000 words)")
    p.add_argument("--max-tokens", type=int, default=16384, help="the answers' cap (the paper's 16k)")
    p.add_argument("--gen-retries", type=int, default=20, help="the paper's generation retries")
    p.add_argument("--ext-phases", type=int, default=12, help="attempts x rounds x 2 dependent stages")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--batch-tps", type=float, default=2500, help="aggregate decode tokens/s per replica, full batch")
    p.add_argument("--seq-tps", type=float, default=40, help="decode tokens/s of one sequence in a busy batch")
    return p.parse_args()


def measured(run: Path, k: int) -> dict:
    m = run / f"iter_{k}" / "manifests"
    gen = json.loads((m / "generate.json").read_text())["counts"]
    ext = json.loads((m / "extend.json").read_text())["counts"]
    usage = json.loads((m / "engine_usage.json").read_text())
    g, e = usage["generate"], usage["extend"]
    return {
        "pass_rate": gen["quality"]["pass_rate"],
        "gen_requests_per_sample": g["requests"] / gen["samples_wanted"],
        "gen_tokens_per_request": g["completion_tokens"] / g["requests"],
        "ext_requests_per_initial": e["requests"] / max(1, ext["initial"]),
        "ext_tokens_per_request": e["completion_tokens"] / e["requests"],
        "kept_share": gen["kept_after_drop_short"] / max(1, gen["samples_wanted"]),
    }


def project(shape: dict, a) -> dict:
    samples = a.instructions * a.languages * a.samples
    scale = a.gen_tokens / shape["gen_tokens_per_request"]  # the measured shape, at the target length
    ext_len = shape["ext_tokens_per_request"] * scale
    gen_tokens = samples * shape["gen_requests_per_sample"] * a.gen_tokens
    initials = samples * shape["kept_share"]
    ext_tokens = initials * shape["ext_requests_per_initial"] * ext_len
    rate = a.gpus * a.batch_tps
    straggler = a.max_tokens / a.seq_tps
    p = shape["pass_rate"]
    rounds = a.gen_retries + 1 if p <= 0 else min(a.gen_retries + 1, math.ceil(math.log(samples) / -math.log(1 - p)))
    chain_gen = shape["gen_requests_per_sample"] * a.gen_tokens / a.seq_tps
    chain_ext = shape["ext_requests_per_initial"] * ext_len / a.seq_tps
    drain = straggler / 2
    base = {"generate": gen_tokens / rate, "extend": ext_tokens / rate}
    free = {"generate": base["generate"] + max(drain, chain_gen - base["generate"]),
            "extend": base["extend"] + max(drain, chain_ext - base["extend"])}
    locked = {"generate": base["generate"] + rounds * drain, "extend": base["extend"] + a.ext_phases * drain}
    return {"samples": samples, "gen_tokens": gen_tokens, "ext_tokens": ext_tokens, "rounds": rounds,
            "straggler_s": straggler, "free": free, "locked": locked}


def main() -> None:
    a = args_()
    shape = measured(a.run, a.iteration)
    out = project(shape, a)
    print(f"measured shape ({a.run}/iter_{a.iteration}): " + ", ".join(f"{k} {v:.3g}" for k, v in shape.items()))
    print(f"scale: {a.instructions} instructions x {a.languages} languages x {a.samples} samples = {out['samples']} "
          f"samples; {a.gpus} replicas x {a.batch_tps:.0f} tok/s; one sequence {a.seq_tps:.0f} tok/s; cap "
          f"{a.max_tokens} tokens (a phase's last answer: {out['straggler_s']:.0f} s); {out['rounds']} generation rounds")
    print(f"{'stage':<10}{'tokens (M)':>12}{'chains (h)':>12}{'lock-step (h)':>15}{'ratio':>8}")
    for stage, tokens in (("generate", out["gen_tokens"]), ("extend", out["ext_tokens"])):
        free, locked = out["free"][stage] / 3600, out["locked"][stage] / 3600
        print(f"{stage:<10}{tokens / 1e6:>12.1f}{free:>12.2f}{locked:>15.2f}{locked / free:>8.2f}")
    free, locked = sum(out["free"].values()) / 3600, sum(out["locked"].values()) / 3600
    print(f"{'total':<10}{(out['gen_tokens'] + out['ext_tokens']) / 1e6:>12.1f}{free:>12.2f}{locked:>15.2f}"
          f"{locked / free:>8.2f}")


if __name__ == "__main__":
    main()
