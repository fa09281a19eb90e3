"""Throughput of our engine path, measured side by side in one run on the tiny model (or
`--model PATH`), printed as a table of ratios:

  (a) generation stage (chains on the vLLM async engine in a Ray actor) tokens/s
      / raw `vllm.LLM.generate` on the same prompts and sampling
  (b) extension stage (dependent Stage 1 -> Stage 2 chains, `--attempts` per response as
      loop.extend.attempts) tokens/s
      / raw `LLM.generate` replaying the very requests the chains sent, all at once: the same
        prompt tokens, and each request's own generated length (ignore_eos, max_tokens = what
        it generated), so the same tokens without the dependencies between them
  The raw baselines run in a process of their own, in the process layout our engine uses
  on a CPU (engine.cpu_single_process) and, as (a0)/(b0), in vLLM's default layout.
  (c) our default path on the extension workload
      / the reference's architecture: vLLM's OpenAI server, a client of 32 threads, one HTTP
        request per call, each thread running one sample's chain
  (d) chains / today's former lock-step rounds (every Stage 1 of a round, then every Stage 2)
      on the same extension workload
  (e) evaluation through the OpenAI-compatible engine / through the in-process engine, on
      the same held-out items

    .venv/bin/python scripts/bench_throughput.py [--n 32] [--samples 2] [--max-tokens 256] [--model PATH]
        [--repeat 3] [--only a,b,c] [--smoke] [KEY=VALUE ...]

The settings are the run's, composed as `python -m selflengthen run` composes them (the tiny
preset's sampling and quality rules; KEY=VALUE overrides them as on the run's command line),
with float32, the model window of --max-model-len and the engine on every core.

vLLM's speed on a CPU varies between processes by up to ~40% (thread placement), more than
the differences measured here, so one measurement of each side carries that noise.
`--repeat K` measures every selected comparison K times, each round with a fresh engine on
each side, ours and its baseline side by side on the same round's workload, and prints the
medians and the ratio's range.

The width of the work sets (b) and (c): the extension's chains can keep at most
responses x attempts requests in flight, the raw baseline sends all of its requests at once,
and the reference caps itself at --threads. `--n 64 --samples 4` (all the shipped English
seeds, 4 samples each: ~400 chains) is wider than one CPU batch (engine.max_num_seqs 256).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selflengthen import preflight
from selflengthen.cli import user_errors
from selflengthen.config import schema
from selflengthen.core import prompting
from selflengthen.core.quality import QualityCheck
from selflengthen.core.text import continue_after, first_half, keep_leading_two_thirds
from selflengthen.engines import Request, Sampling, complete_all, workers
from selflengthen.engines.base import render_ids, token_ids
from selflengthen.engines.replicas import EnginePool
from selflengthen.engines.vllm_engine import cpu_threads, single_process_env
from selflengthen.models.resolve import resolve_model
from selflengthen.pipeline.stages.extend import ExtendChain, extend_responses
from selflengthen.pipeline.stages.generate import GenerateChain, sample_responses
from selflengthen.store.samples import SampleLog

REPO = Path(__file__).resolve().parent.parent
# --smoke: a handful of short requests; (b) and (d): one engine start of ours and one raw
# process, the code paths of every other row but the servers of (c) and (e)
SMOKE = {"--n": 8, "--samples": 1, "--max-tokens": 96, "--max-model-len": 1024, "--only": ["b", "d"]}
SMOKE_OVERRIDES = ["engine.cpu_memory_utilization=0.05"]  # a small KV cache: a test worker beside it


def args_():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the embedded tiny model)")
    p.add_argument("--n", type=int, default=32, help="instructions (the shipped English seed file holds 64)")
    p.add_argument("--samples", type=int, default=2, help="samples per instruction (loop.generate.samples)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--threads", type=int, default=32, help="client threads of the reference architecture")
    p.add_argument("--attempts", type=int, default=None,
                   help="extension attempts per response (default: loop.extend.attempts, 2 as in the paper)")
    p.add_argument("--rounds", type=int, default=2, help="two-stage extension rounds per attempt")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds: every comparison measured this many times, interleaved (ours and its baseline "
                        "in each round, on that round's workload); the table gives medians and the ratio's range")
    p.add_argument("--only", type=lambda v: [k.strip() for k in v.split(",") if k.strip()],
                   default=list(NAMES),
                   help="comma-separated comparisons to measure, e.g. a,b,c (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest measurement, to check that the script runs (the suite runs it): "
                        + " ".join(f"{k} {','.join(v) if isinstance(v, list) else v}" for k, v in SMOKE.items())
                        + " unless given")
    p.add_argument("--raw-job", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run's config (KEY=VALUE)")
    a = p.parse_args()
    if a.smoke:  # the smoke sizes replace the defaults, not what the command line gives
        given = {arg.split("=")[0] for arg in sys.argv[1:] if arg.startswith("--")}
        for flag, value in SMOKE.items():
            if flag not in given:
                setattr(a, flag[2:].replace("-", "_"), value)
        a.overrides = [*SMOKE_OVERRIDES, *a.overrides]
    return a


def settings(a) -> schema.Config:
    """The run's typed settings, composed as `python -m selflengthen run` composes them (the
    tiny preset unless `--model`), with this benchmark's engine and model sizes and the
    command line's Hydra overrides on top."""
    model = [f"model.path={a.model}", "model.end_of_turn=[<|im_end|>,<|eot_id|>,<|endoftext|>]"] if a.model else []
    return preflight.composed("run", [*model, f"model.max_model_len={a.max_model_len}", "model.dtype=float32",
                                      f"loop.sampling.max_tokens={a.max_tokens}",
                                      f"engine.num_cpus_per_replica={os.cpu_count()}",
                                      "engine.cpu_memory_utilization=0.2", *a.overrides])


def sampling(cfg: schema.Config, max_tokens: int) -> Sampling:
    s = cfg.loop.sampling
    return Sampling(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, repetition_penalty=s.repetition_penalty,
                    max_tokens=max_tokens, stop=tuple(s.stop))


def raw_llm(model, cfg, prompts_ids, samp: Sampling, ignore_eos=False, max_tokens=None, single_process=True):
    """Raw `LLM.generate` over token-id prompts, in a fresh process of its own (so its
    thread binding and its memory do not touch the rest of the benchmark): (generated
    tokens, seconds). `single_process`: the model runs in the engine's own process, the
    layout our engine uses on a CPU (engine.cpu_single_process); False: vLLM's default
    (a frontend, an engine core and a model worker, one process each)."""
    job = {"model": model, "max_model_len": int(cfg.model.max_model_len), "prompts": prompts_ids,
           "memory": cfg.engine.cpu_memory_utilization,
           "sampling": {"temperature": samp.temperature, "top_p": samp.top_p, "top_k": samp.top_k,
                        "repetition_penalty": samp.repetition_penalty,
                        "stop": [] if ignore_eos else list(samp.stop)},  # ignore_eos: exactly max_tokens each
           "end_of_turn": list(cfg.model.end_of_turn), "ignore_eos": ignore_eos,
           "max_tokens": max_tokens or [samp.max_tokens] * len(prompts_ids)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        with (Path(tmp) / "log.txt").open("w") as log:
            done = subprocess.run([sys.executable, __file__, "--raw-job", str(Path(tmp) / "job.json")],
                                  env=layout_env(single_process), stdout=log, stderr=subprocess.STDOUT, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"raw LLM.generate failed (rc {done.returncode}):\n"
                             f"{(Path(tmp) / 'log.txt').read_text()[-3000:]}")
        result = json.loads((Path(tmp) / "result.json").read_text())
    return result["tokens"], result["seconds"]


def layout_env(single_process: bool) -> dict:
    """The environment of a vLLM process in our CPU layout (vLLM's engine and its model in
    one process, with the threads our engine gives it) or in vLLM's default layout."""
    if single_process:
        return {**os.environ, **single_process_env()}
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
    env.pop("OMP_NUM_THREADS", None)  # vLLM's own binding: all cores but one for the model worker
    return env


def raw_job(path: Path) -> None:
    """The child process of `raw_llm`."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    job = json.loads(path.read_text())
    layout = {"distributed_executor_backend": "uni"} if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" else {}
    llm = LLM(model=job["model"], max_model_len=job["max_model_len"], dtype="float32", enforce_eager=True,
              gpu_memory_utilization=job["memory"], seed=0, **layout)
    eos = token_ids(llm.get_tokenizer(), job["end_of_turn"])
    params = [SamplingParams(**job["sampling"], max_tokens=mt, stop_token_ids=[] if job["ignore_eos"] else eos,
                             ignore_eos=job["ignore_eos"]) for mt in job["max_tokens"]]
    llm.generate([TokensPrompt(prompt_token_ids=[1, 2, 3])], params[:1], use_tqdm=False)  # warm-up
    t = time.time()
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in job["prompts"]], params, use_tqdm=False)
    seconds = time.time() - t
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    (path.parent / "result.json").write_text(json.dumps({"tokens": tokens, "seconds": seconds}))
    llm.llm_engine.engine_core.shutdown()


class Recorder:
    """An engine in front of ours that notes each request and how many tokens it generated,
    for (b)'s baseline to replay them."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    async def complete(self, request: Request, samp: Sampling):
        done = await self.engine.complete(request, samp)
        self.calls.append((request, done.completion_tokens))
        return done


async def timed(engine, coro_factory):
    before = engine.usage()
    t = time.time()
    result = await coro_factory()
    seconds = time.time() - t
    after = engine.usage()
    tokens = sum(v["completion_tokens"] - before.get(k, {}).get("completion_tokens", 0) for k, v in after.items())
    requests = sum(v["requests"] - before.get(k, {}).get("requests", 0) for k, v in after.items())
    return result, tokens, seconds, requests


async def lockstep_extend(engine, items, samp, rounds, attempts):
    """The former architecture: every attempt's Stage 1 of a round, then every Stage 2."""
    items = [dict(it, id=f"{it['id']}-a{j}") for it in items for j in range(attempts)]
    current = {it["id"]: it["response"] for it in items}
    for _ in range(rounds):
        active = [(it, first_half(current[it["id"]])[0]) for it in items if first_half(current[it["id"]])[1]]
        s1 = await complete_all(engine, [Request(prompting.extender_request(it["instruction"], half, "en"))
                                         for it, half in active], samp)
        prefixes = [(keep_leading_two_thirds(o.text) + "\n\n") if keep_leading_two_thirds(o.text) else "" for o in s1]
        s2 = await complete_all(engine, [Request(prompting.extender_request(it["instruction"], current[it["id"]], "en"),
                                                 prefix=p) for (it, _), p in zip(active, prefixes)], samp)
        for (it, _), p, o in zip(active, prefixes, s2):
            current[it["id"]] = continue_after(p, o.text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, cfg, log: Path, single_process: bool):
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "base",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", str(cfg.model.max_model_len), "--gpu-memory-utilization",
           str(cfg.engine.cpu_memory_utilization), "--seed", "0"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=layout_env(single_process))
    for _ in range(240):  # bounded: 240 tries, one per second
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return proc, port
        except OSError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("server not ready in 240 s")


def reference_extend(port: int, model: str, items, samp: Sampling, rounds: int, attempts: int, threads: int):
    """The reference's shape: one thread per sample chain (its attempts one after the
    other), one HTTP request per call."""
    from openai import OpenAI
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY", max_retries=2, timeout=600)
    extra = {"top_k": samp.top_k, "repetition_penalty": samp.repetition_penalty}
    counted = []

    def chain(item):
        for _ in range(attempts):
            attempt(item)

    def attempt(item):
        current = item["response"]
        for _ in range(rounds):
            half, taken, _ = first_half(current)
            if not taken:
                return
            r1 = client.chat.completions.create(
                model="base", messages=prompting.extender_request(item["instruction"], half, "en"),
                temperature=samp.temperature, top_p=samp.top_p, max_tokens=samp.max_tokens, stop=list(samp.stop),
                extra_body=extra)
            counted.append(r1.usage.completion_tokens)
            kept = keep_leading_two_thirds(r1.choices[0].message.content or "")
            prefix = kept + "\n\n" if kept else ""
            ids = render_ids(tok, Request(prompting.extender_request(item["instruction"], current, "en"), prefix=prefix))
            r2 = client.completions.create(model="base", prompt=ids,
                                           temperature=samp.temperature, top_p=samp.top_p, max_tokens=samp.max_tokens,
                                           stop=list(samp.stop), extra_body=extra)
            counted.append(r2.usage.completion_tokens)
            current = continue_after(prefix, r2.choices[0].text)

    t = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(chain, items))
    return sum(counted), time.time() - t


NAMES = {"a": "generate stage vs raw LLM.generate", "a0": "  the same, raw in vLLM's default layout",
         "b": "extend stage vs raw LLM.generate (same tokens)", "b0": "  the same, raw in vLLM's default layout",
         "c": "default path vs reference (HTTP, 32 threads)", "c0": "  the same, server in vLLM's default layout",
         "d": "chains vs lock-step rounds (extend)",
         "e": "eval: OpenAI-compatible vs in-process engine", "e0": "  the same, server in vLLM's default layout"}


def one_round(a, model, cfg, samp, check, instructions, gen_ids, tok, ours_first: bool) -> tuple[dict, dict]:
    """Every selected comparison once, each side on this round's own workload; `ours_first`
    alternates which side of (a) runs first, so a drift of the machine's speed within a
    run falls on both sides. Returns {key: (ours tok/s, baseline tok/s)} and the workload."""
    rows, keys = {}, set(a.only)
    raw_gen = {}

    def raw_generation():
        if "a" in keys:
            raw_gen["a"] = raw_llm(model, cfg, gen_ids, samp)
        if "a0" in keys:
            raw_gen["a0"] = raw_llm(model, cfg, gen_ids, samp, single_process=False)

    if not ours_first:
        raw_generation()
    attempts = a.attempts or int(cfg.loop.extend.attempts)
    pool = EnginePool(model, {}, cfg.engine, cfg.model)
    recorder = Recorder(pool)

    async def ours():
        chain = GenerateChain(pool, samp, check, 1, None, seed=(0, "bench"))
        await complete_all(pool, [Request([{"role": "user", "content": "warm up"}])], samp.with_max_tokens(4))
        (initial, _), tokens, seconds, _ = await timed(pool, lambda: sample_responses(chain, instructions, a.samples,
                                                                                       SampleLog(None)))
        items = [dict(r, response=r["response"]) for r in initial if first_half(r["response"])[1]] or initial
        ext = ExtendChain(recorder, samp, check, 1, a.rounds, 1.2, None, seed=(0, "bench-ext"))
        _, e_tokens, e_seconds, e_requests = await timed(pool, lambda: extend_responses(ext, items, attempts,
                                                                                          SampleLog(None)))
        lock = None
        if "d" in keys:
            _, l_tokens, l_seconds, _ = await timed(pool, lambda: lockstep_extend(pool, items, samp, a.rounds, attempts))
            lock = (l_tokens, l_seconds)
        return tokens / seconds, items, (e_tokens, e_seconds, e_requests), lock

    try:
        gen_tps, items, ext, lock = asyncio.run(ours())
    finally:
        pool.shutdown()
    if ours_first:
        raw_generation()
    for key, (tokens, seconds) in raw_gen.items():
        rows[key] = (gen_tps, tokens / seconds)
    if lock:
        rows["d"] = (ext[0] / ext[1], lock[0] / lock[1])
    if ext[2] == 0:
        raise SystemExit("the extension made no request (no draft had two paragraphs to split): "
                         "raise --n, --samples or --max-tokens")
    replay = [(render_ids(tok, request), max(1, tokens)) for request, tokens in recorder.calls]
    for key, single_process in (("b", True), ("b0", False)):
        if key in keys:
            raw_ext = raw_llm(model, cfg, [ids for ids, _ in replay], samp, ignore_eos=True,
                              max_tokens=[n for _, n in replay], single_process=single_process)
            rows[key] = (ext[0] / ext[1], raw_ext[0] / raw_ext[1])

    through_server = {}
    for single_process, c_key, e_key in ((True, "c", "e"), (False, "c0", "e0")):
        if not keys & {c_key, e_key}:
            continue
        log = Path(tempfile.gettempdir()) / f"bench_server_{c_key}.log"
        proc, port = start_server(model, cfg, log, single_process)
        try:
            if c_key in keys:
                ref = reference_extend(port, model, items, samp, a.rounds, attempts, a.threads)
                rows[c_key] = (ext[0] / ext[1], ref[0] / ref[1])
            if e_key in keys:
                through_server[e_key] = eval_through_openai(model, cfg, port)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    if through_server:
        in_process = eval_in_process(model, cfg)  # the servers are gone: nothing else on the CPUs
        rows.update({key: (tps, in_process) for key, tps in through_server.items()})
    workload = {"responses": len(items), "attempts": attempts, "requests": ext[2], "tokens": ext[0]}
    return rows, workload


def main() -> None:
    a = args_()
    unknown = set(a.only) - set(NAMES)
    if unknown:
        raise SystemExit(f"--only: unknown comparison(s) {sorted(unknown)}; choose from {','.join(NAMES)}")
    cfg = settings(a)
    model = resolve_model(cfg.model, cfg.paths.cache_dir)
    samp = sampling(cfg, a.max_tokens)
    check = QualityCheck(cfg.loop.quality_rules())
    seeds = [l for l in (REPO / "selflengthen" / "seeds" / "en.jsonl").read_text().splitlines() if l.strip()]
    instructions = [{"id": f"b{i}", "language": "en", "instruction": json.loads(l)["instruction"]}
                    for i, l in enumerate(seeds[: a.n])]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    gen_ids = [render_ids(tok, Request(prompting.generator_request(r["instruction"])))
               for r in instructions for _ in range(a.samples)]  # the same prompts every round
    workers.init_ray(cfg.ray)
    rounds = []
    for r in range(a.repeat):
        rows, workload = one_round(a, model, cfg, samp, check, instructions, gen_ids, tok, ours_first=r % 2 == 1)
        rounds.append(rows)
        print(f"round {r + 1}/{a.repeat}: " + ", ".join(f"({k}) {o:.0f}/{b:.0f} = {o / b:.2f}"
                                                         for k, (o, b) in rows.items())
              + f"; extension workload {workload['requests']} requests, {workload['tokens']} tokens", flush=True)
    print(f"\n{'':4} {'comparison':<48} {'ours tok/s':>11} {'baseline':>10} {'ratio':>7}"
          + (f" {'min-max':>11}" if a.repeat > 1 else ""))
    for key in NAMES:
        measured = [rows[key] for rows in rounds if key in rows]
        if not measured:
            continue
        ratios = [o / b for o, b in measured]
        line = (f"{'(' + key + ')':<4} {NAMES[key]:<48} {statistics.median(o for o, _ in measured):>11.0f} "
                f"{statistics.median(b for _, b in measured):>10.0f} {statistics.median(ratios):>7.2f}")
        print(line + (f" {min(ratios):>5.2f}-{max(ratios):.2f}" if a.repeat > 1 else ""))
    print(f"\nmodel {model}; {len(instructions)} instructions x {a.samples} samples; max_tokens {a.max_tokens}; "
          f"extension workload (last round): {workload['responses']} responses x {workload['attempts']} attempts "
          f"x {a.rounds} rounds ({workload['requests']} requests, {workload['tokens']} tokens)")
    if a.repeat > 1:
        print(f"{a.repeat} rounds, each comparison measured once per round on that round's own workload, the two "
              f"sides of (a) in alternating order; tok/s and ratio columns are medians over the rounds (the "
              f"ratio's median, not the medians' ratio), min-max the ratio's range")
    print(f"raw LLM.generate and the reference's server run in processes of their own, in the layout our engine "
          f"uses on a CPU (vLLM's engine and its model in one process, {cpu_threads()} thread(s): "
          f"engine.cpu_single_process) and, for (a0)/(b0)/(c0)/(e0), in vLLM's default layout")


def _eval_tps(engine, cfg) -> float:
    """Generated tokens per second over the shipped held-out items."""
    from selflengthen.evaluation import runner
    from selflengthen.evaluation.benchmarks import get_benchmark, load_items

    bench, items = get_benchmark("heldout_tiny"), load_items("heldout_tiny")

    async def go():
        _, tokens, seconds, _ = await timed(engine, lambda: runner.generate_predictions(
            engine, bench, items, sampling(cfg, 256), None, SampleLog(None)))
        return tokens / seconds

    return asyncio.run(go())


def eval_through_openai(model, cfg, port) -> float:
    from selflengthen.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "base", {}, list(cfg.model.end_of_turn), tokenizer=model,
                          per_request_seeds=False)
    try:
        return _eval_tps(engine, cfg)
    finally:
        asyncio.run(engine.aclose())


def eval_in_process(model, cfg) -> float:
    pool = EnginePool(model, {}, cfg.engine, cfg.model)
    try:
        return _eval_tps(pool, cfg)
    finally:
        pool.shutdown()


if __name__ == "__main__":
    if "--raw-job" in sys.argv:
        raw_job(Path(sys.argv[sys.argv.index("--raw-job") + 1]))
    else:
        with user_errors(False, "nothing was written"):  # a bad override: one line, exit 2
            main()
