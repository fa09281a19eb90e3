"""`python -m selflengthen estimate [KEY=VALUE ...]`: what a run with this config will cost,
before it runs. The same config as `run` (conf/estimate.yaml includes conf/config.yaml,
so `experiment=paper-qwen2-7b` or any run override works) plus the `estimate.*`
assumptions. Prints, per iteration and stage, the expected requests, prompt and generated
tokens and GPU-hours, the training tokens and GPU-hours, and the memory one GPU needs for
serving and for training; writes nothing unless `estimate.out=FILE.json`.
`estimate.verb=rl` costs an `rl` job instead (conf/rl/default.yaml's rl.train.*): its answers,
generated and trained tokens, GPU-hours, and the memory of training with colocated generation.

The arithmetic lives in tokens.py (requests and tokens), memory.py (memory and FLOPs),
arch.py (model shapes) and measured.py (a previous run's tokens/s); this module composes
the config, joins them and renders the table.
"""
from __future__ import annotations

from pathlib import Path

from selflengthen import preflight
from selflengthen.config import files
from selflengthen.config import schema
from selflengthen.estimate import arch as archs, measured, memory, rl as grpo_cost, settings as inputs, tokens
from selflengthen.models import model_check
from selflengthen.pipeline import stages as loop_stages
from selflengthen.store import artifacts


def compose(overrides: list[str]):
    """conf/estimate.yaml with the overrides, without running a Hydra job (nothing is written)."""
    return files.compose("estimate", overrides)


def model_arch(model: schema.Model) -> archs.Arch | None:
    """The model's shape: its config.json (a local folder or the Hugging Face cache), or
    the built-in table."""
    path = model.path
    folder = Path(path).expanduser()
    if not folder.is_dir():
        folder = model_check.hub_snapshot(path) if "/" in path and not path.startswith(("/", ".", "~")) else None
    return archs.lookup(path, folder)


def generation_rates(est: schema.Estimate, iterations_dir: str) -> dict | None:
    """Generated tokens/s per GPU per stage: measured by estimate.from_run, else
    estimate.tokens_per_s_per_gpu, else None (no GPU-hours)."""
    if est.from_run:
        found = measured.throughput(measured.run_folder(est.from_run, iterations_dir), loop_stages.engine_names())
        rates = {s: found["per_stage"].get(s, found["all"]) for s in loop_stages.engine_names()}
        return {"per_stage": rates, "source": "from_run", "measured": found}
    if est.tokens_per_s_per_gpu:
        rate = est.tokens_per_s_per_gpu
        return {"per_stage": {s: rate for s in loop_stages.engine_names()}, "source": "tokens_per_s_per_gpu"}
    return None


def compute(settings: schema.EstimateConfig) -> dict:
    """The whole estimate as a plain dict (what estimate.out writes and render prints)."""
    est = settings.estimate
    shape, assume = inputs.shape(settings), inputs.assumptions(est)
    place = inputs.train_placement(settings.train)
    a = model_arch(settings.model)
    rates = generation_rates(est, settings.paths.iterations_dir)
    epochs = settings.train.epochs
    iterations = []
    for it in tokens.iterations(shape, assume, loop_stages.engine_names()):
        row = it.as_dict(epochs)
        for name, st in row["stages"].items():
            st["gpu_hours"] = st["generated_tokens"] / rates["per_stage"][name] / 3600 if rates else None
        row["train_gpu_hours"] = training_hours(it, est, a, epochs)
        iterations.append(row)
    total = {key: sum(st[key] for r in iterations for st in r["stages"].values())
             for key in ("requests", "prompt_tokens", "generated_tokens")}
    total["training_tokens"] = sum(r["training_tokens"] for r in iterations)
    total["generation_gpu_hours"] = sum(st["gpu_hours"] for r in iterations for st in r["stages"].values()) \
        if rates else None
    total["train_gpu_hours"] = sum(r["train_gpu_hours"] for r in iterations) \
        if all(r["train_gpu_hours"] is not None for r in iterations) else None
    hours = [h for h in (total["generation_gpu_hours"], total["train_gpu_hours"]) if h is not None]
    total["gpu_hours"] = sum(hours) if hours else None
    total["wall_hours"] = total["gpu_hours"] / est.gpus if hours else None
    longest = max((st["longest"] for r in iterations for st in r["stages"].values()), default=0)
    return {"model": {"name": settings.model.name, "path": settings.model.path, "arch": a.as_dict() if a else None,
                      "parameters": archs.params(a) if a else None},
            "iterations": iterations, "total": total, "rates": rates, "assumptions": est.model_dump(),
            "config": {"languages": list(shape.languages), "new_per_language": shape.new_per_language,
                       "iterations": shape.iterations, "samples": shape.samples,
                       "generate_retries": shape.generate_retries, "attempts": shape.attempts,
                       "extend_retries": shape.extend_retries, "rounds": shape.rounds,
                       "max_tokens": shape.max_tokens, "max_model_len": shape.max_model_len, "epochs": epochs,
                       "train_max_length": shape.train_max_length, "synth": settings.loop.synth,
                       "train": place},
            "memory": memory_needs(settings, a, place, longest) if a else None}


def training_hours(it: tokens.Iteration, est: schema.Estimate, a: archs.Arch | None, epochs: float) -> float | None:
    """GPU-hours of training both adapters: at estimate.train_tokens_per_s_per_gpu, or from
    the FLOPs at estimate.gpu_tflops x estimate.mfu (needs the model's shape)."""
    if est.train_tokens_per_s_per_gpu:
        return it.training_tokens(epochs) / est.train_tokens_per_s_per_gpu / 3600
    if a is None:
        return None
    return sum(memory.training_gpu_hours(r["rows"], r["tokens_per_row"], epochs, a, est.gpu_tflops, est.mfu)
               for roles in it.training.values() for r in roles.values())


def memory_needs(settings: schema.EstimateConfig, a: archs.Arch, place: dict, longest: float) -> dict:
    """Per GPU: serving (weights, LoRA slots, KV cache for estimate.concurrent_sequences
    sequences of model.max_model_len; how many of those, and of the longest expected
    request, fit) and training at train.max_length under train.strategy. An openai engine's
    server owns its GPUs: its serving is sized as one vLLM replica would be."""
    est, engine, train, model = settings.estimate, settings.engine, settings.train, settings.model
    replica = engine if engine.serves_local_weights else schema.VllmEngine(seed=settings.seed, max_lora_rank=train.rank)
    dtype = archs.DTYPE_BYTES.get(model.dtype, 2)
    tp = replica.tensor_parallel_size
    serving = memory.serving_gib(a, dtype_bytes=dtype, tensor_parallel=tp, seq_len=model.max_model_len,
                                 sequences=est.concurrent_sequences, max_loras=len(artifacts.ROLES),
                                 lora_rank=replica.max_lora_rank, overhead_gib=est.overhead_gib)
    budget = est.gpu_memory_gib * replica.gpu_memory_utilization
    seq = train.max_length * train.per_device_batch_size
    serving_len = model.max_model_len
    training = memory.training_gib(a, seq=seq, rank=train.rank, workers=place["workers"],
                                   strategy=place["strategy"], cpu_offload=place["cpu_offload"],
                                   gradient_checkpointing=train.gradient_checkpointing,
                                   overhead_gib=est.overhead_gib)
    return {"serving": {**serving, "tensor_parallel_size": tp, "dtype_bytes": dtype, "budget": budget,
                        "sequences": est.concurrent_sequences, "seq_len": model.max_model_len,
                        "fit_sequences": memory.sequences_that_fit(serving, budget), "longest_request": longest,
                        "fit_longest": memory.sequences_that_fit(
                            {**serving, "kv_per_sequence": serving["kv_per_sequence"] * longest / serving_len},
                            budget)},
            "training": {**training, "seq": seq, **place}, "gpu_memory_gib": est.gpu_memory_gib}


def compute_rl(settings: schema.EstimateConfig) -> dict:
    """estimate.verb=rl: the GRPO job of rl.train.* as a plain dict (estimate.out, render_rl)."""
    est, train = settings.estimate, settings.train
    shape, a = inputs.rl_shape(settings), model_arch(settings.model)
    found = measured.rl_job(Path(est.from_run).expanduser()) if est.from_run else None
    mean = found["mean_completion"] if found else grpo_cost.mean_completion(shape.max_completion_length,
                                                                           est.rl_completion_fraction)
    counted = grpo_cost.tokens(shape, mean)
    hours = {"generation": None, "train": None, "total": None}
    if found:  # measured end to end: generation and the optimizer together
        hours["total"] = counted.generated_tokens / found["tokens_per_s_per_gpu"] / 3600
    else:
        if est.tokens_per_s_per_gpu:
            hours["generation"] = counted.generated_tokens / est.tokens_per_s_per_gpu / 3600
        if est.train_tokens_per_s_per_gpu:
            hours["train"] = counted.training_tokens / est.train_tokens_per_s_per_gpu / 3600
        elif a is not None:
            hours["train"] = grpo_cost.training_gpu_hours(shape, counted, a, est.gpu_tflops, est.mfu)
        known = [h for h in (hours["generation"], hours["train"]) if h is not None]
        hours["total"] = sum(known) if len(known) == 2 else None
    gpus = max(1, train.workers)
    memory_use = grpo_cost.colocated_gib(
        a, shape, rank=train.rank, strategy=train.strategy, cpu_offload=train.cpu_offload,
        gradient_checkpointing=train.gradient_checkpointing, dtype_bytes=archs.DTYPE_BYTES.get(settings.model.dtype, 2),
        overhead_gib=est.overhead_gib) if a else None
    return {"verb": "rl", "model": {"name": settings.model.name, "path": settings.model.path,
                                    "arch": a.as_dict() if a else None, "parameters": archs.params(a) if a else None},
            "rl": {**settings.rl.train.model_dump(), "workers": shape.workers, "strategy": train.strategy,
                   "completions_per_step": shape.completions_per_step, "prompt_tokens": shape.prompt_tokens},
            "tokens": counted.as_dict(), "gpu_hours": hours,
            "wall_hours": hours["total"] / gpus if hours["total"] is not None else None,
            "measured": found, "memory": memory_use, "gpu_memory_gib": est.gpu_memory_gib,
            "assumptions": est.model_dump()}


def render_rl(r: dict) -> str:
    """The rl estimate as the table estimate prints."""
    c, t, h, est, mem = r["rl"], r["tokens"], r["gpu_hours"], r["assumptions"], r["memory"]
    per_step = f"{c['num_generations']} answers x {c['prompts_per_step']} prompt{'s' if c['prompts_per_step'] > 1 else ''}"
    if c["workers"] > 1:
        per_step += f" x {c['workers']} workers"
    lines = [f"estimate for rl on {r['model']['name']} ({r['model']['path']}): {c['steps']:,} GRPO steps, {per_step} "
             f"= {c['completions_per_step']:,} answers a step, max_completion_length {c['max_completion_length']:,}",
             ""]
    if r["measured"]:
        m = r["measured"]
        mean_from = f"measured by {m['run']} over {m['steps']} steps (model {m['model']}, device {m['device']})"
    else:
        mean_from = f"assumed: estimate.rl_completion_fraction={est['rl_completion_fraction']:g} of the cap"
    lines += [f"  answers           {human(t['completions']):>10}",
              f"  mean answer       {human(t['mean_completion']):>10} tokens ({mean_from})",
              f"  prompt tokens     {human(t['prompt_tokens']):>10} ({c['prompt_tokens']:.0f} a prompt)",
              f"  generated tokens  {human(t['generated_tokens']):>10}  GPU-hours {hours(h['generation'])}",
              f"  trained tokens    {human(t['training_tokens']):>10}  GPU-hours {hours(h['train'])}"]
    wall = f", wall time about {r['wall_hours']:,.2f} h on train.workers={c['workers']} GPUs" \
        if r["wall_hours"] is not None else ""
    lines.append(f"total: {hours(h['total'])} GPU-hours{wall}")
    if r["measured"]:
        lines.append(f"rate: {r['measured']['tokens_per_s_per_gpu']:,.0f} generated tokens/s per GPU, generation and "
                     "optimizer together, measured by estimate.from_run")
    else:
        if h["generation"] is None:
            lines.append("generation GPU-hours: give estimate.tokens_per_s_per_gpu=N (generated tokens/s per GPU) or "
                         "estimate.from_run=rl/NAME (a finished rl job's measured rate)")
        lines.append(f"training: each answer with its prompt once, FLOPs 6 x parameters + attention at "
                     f"{est['gpu_tflops']:g} TFLOP/s x MFU {est['mfu']:g} (estimate.gpu_tflops, estimate.mfu)"
                     if not est.get("train_tokens_per_s_per_gpu") else
                     f"training: {est['train_tokens_per_s_per_gpu']:,.0f} tokens/s per GPU")
    lines.append("")
    if mem is None:
        lines.append("memory: the model's shape is unknown (no config.json in model.path or the Hugging Face cache, "
                     "and not a built-in preset)")
    else:
        fits = "fits" if mem["total"] <= r["gpu_memory_gib"] else "does not fit"
        lines += [f"memory per GPU, training with colocated generation ({r['model']['parameters'] / 1e9:.2f}B "
                  f"parameters, train.strategy={c['strategy']} over {c['workers']} worker"
                  f"{'s' if c['workers'] > 1 else ''}, {mem['sequences']} sequences of up to "
                  f"{mem['seq'] // mem['sequences']:,} tokens a GPU):",
                  f"  training: weights {mem['weights']:.1f} + adapter {mem['adapter']:.1f} + activations "
                  f"{mem['activations']:.1f} + logits {mem['logits']:.1f}",
                  f"  generation: engine weights {mem['engine_weights']:.1f} + KV cache {mem['kv']:.1f} "
                  f"({mem['sequences']} x {mem['kv_per_sequence']:.2f})",
                  f"  + overhead {mem['overhead']:.1f} = {mem['total']:.1f} GiB: {fits} in {r['gpu_memory_gib']:g} GiB"]
    lines += ["", "assumptions (estimate.*): " + ", ".join([
        f"rl_completion_fraction={est['rl_completion_fraction']:g}", f"instruction_words={est['instruction_words']:g}",
        f"chat_overhead_tokens={est['chat_overhead_tokens']:g}", f"gpu_memory_gib={est['gpu_memory_gib']:g}"]),
        "  one GRPO iteration per generation, no reference model (rl.train.beta=0); the engine's weights are a "
        "second copy beside the trainer's; lengths are means, capped by max_completion_length"]
    return "\n".join(lines)


# --- the table ---------------------------------------------------------------------------

def human(n: float | None) -> str:
    """A count for the table: 950, 12.3k, 4.56M, 1.23B."""
    if n is None:
        return "-"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}" if abs(n) < 100 * size else f"{n / size:,.0f}{suffix}"
    return f"{n:.0f}"


def hours(h: float | None) -> str:
    if h is None:
        return "-"
    if 0 < h < 0.01:
        return "<0.01"
    return f"{h:,.0f}" if h >= 100 else (f"{h:.1f}" if h >= 1 else f"{h:.2g}")


def render(r: dict) -> str:
    asked, total, est = r["config"], r["total"], r["assumptions"]
    a = r["model"]["arch"]
    lines = [f"estimate for {r['model']['name']} ({r['model']['path']}): {asked['iterations']} iterations, "
             f"{asked['new_per_language']:,} new instructions x {len(asked['languages'])} "
             f"language{'s' if len(asked['languages']) > 1 else ''} "
             f"({', '.join(asked['languages'])}), {asked['samples']} samples x up to {asked['generate_retries']} tries, "
             f"{asked['attempts']} attempts x up to {asked['extend_retries']} tries x {asked['rounds']} rounds x 2 stages, "
             f"max_tokens {asked['max_tokens']:,}, {asked['epochs']:g} epochs"]
    if asked["synth"] != "extend":
        lines.append(f"note: loop.synth={asked['synth']}: only the extender's path is estimated")
    lines.append("")
    head = f"{'iter':>4}  {'stage':9} {'requests':>9} {'prompt tok':>11} {'generated tok':>14} {'GPU-hours':>10}"
    lines += [head, "-" * len(head)]
    for it in r["iterations"]:
        words = "; ".join(f"{lang} {w['initial']:,.0f} -> {w['extended']:,.0f} words"
                          for lang, w in it["words"].items())
        for name, st in it["stages"].items():
            lines.append(f"{it['iteration']:>4}  {name:9} {human(st['requests']):>9} {human(st['prompt_tokens']):>11} "
                         f"{human(st['generated_tokens']):>14} {hours(st['gpu_hours']):>10}")
        rows = sum(x["rows"] for roles in it["training"].values() for x in roles.values())
        lines.append(f"{it['iteration']:>4}  {'train':9} {human(rows):>9} {'rows':<11} "
                     f"{human(it['training_tokens']):>14} {hours(it['train_gpu_hours']):>10}")
        lines.append(f"{'':>4}  {'':9} {words}")
    lines.append("-" * len(head))
    lines.append(f"{'all':>4}  {'generate':9} {human(total['requests']):>9} {human(total['prompt_tokens']):>11} "
                 f"{human(total['generated_tokens']):>14} {hours(total['generation_gpu_hours']):>10}")
    lines.append(f"{'all':>4}  {'train':9} {'':>9} {'':11} {human(total['training_tokens']):>14} "
                 f"{hours(total['train_gpu_hours']):>10}")
    wall = (f"{total['wall_hours']:,.1f} h ({total['wall_hours'] / 24:.1f} days) on estimate.gpus={est['gpus']} "
            "GPUs kept busy") if total["wall_hours"] is not None else "-"
    lines.append(f"total: {hours(total['gpu_hours'])} GPU-hours, wall time about {wall}")
    lines += ["", *throughput_lines(r), *memory_lines(r, a), "", *assumption_lines(est)]
    return "\n".join(lines)


def throughput_lines(r: dict) -> list[str]:
    rates, est = r["rates"], r["assumptions"]
    if rates is None:
        gen = ("generation GPU-hours: give estimate.tokens_per_s_per_gpu=N (generated tokens/s per GPU) or "
               "estimate.from_run=iterations/NAME (a previous run's measured rate)")
    elif rates["source"] == "from_run":
        m = rates["measured"]
        per = ", ".join(f"{s} {v:,.0f}" for s, v in rates["per_stage"].items())
        gen = (f"generation: {per} generated tokens/s per GPU, measured by {m['run']} (model {m['model']}, "
               f"iterations {m['iterations']}, device {m['device']})")
        if m["model"] != r["model"]["path"]:
            gen += (f"\nnote: measured with model {m['model']}, not {r['model']['path']}: "
                    "the GPU-hours hold only as far as the two run alike")
    else:
        gen = (f"generation: {rates['per_stage']['generate']:,.0f} generated tokens/s per GPU "
               "(estimate.tokens_per_s_per_gpu)")
    if est.get("train_tokens_per_s_per_gpu"):
        train = (f"training: {est['train_tokens_per_s_per_gpu']:,.0f} tokens/s per GPU "
                 "(estimate.train_tokens_per_s_per_gpu)")
    else:
        train = (f"training: FLOPs per token 6 x parameters + attention, at {est['gpu_tflops']:g} TFLOP/s x "
                 f"MFU {est['mfu']:g} (estimate.gpu_tflops, estimate.mfu)")
        if r["config"]["train"]["cpu_offload"]:
            train += "; CPU offload is slower than that (not modeled)"
    return [gen, train]


def memory_lines(r: dict, a: dict | None) -> list[str]:
    mem = r["memory"]
    if mem is None:
        return ["memory: the model's shape is unknown (no config.json in model.path or the Hugging Face cache, "
                "and not a built-in preset)"]
    sv, tr = mem["serving"], mem["training"]
    lines = ["", f"memory per GPU ({r['model']['parameters'] / 1e9:.2f}B parameters, {a['layers']} layers, hidden "
             f"{a['hidden']}, {a['kv_heads']} KV heads x {a['head_dim']}; shape from {a['source']}):",
             f"  serving, tensor_parallel_size {sv['tensor_parallel_size']}: weights {sv['weights']:.1f} + LoRA slots "
             f"{sv['lora']:.1f} + KV cache {sv['kv']:.1f} ({sv['sequences']} sequences x {sv['seq_len']:,} tokens, "
             f"{sv['kv_per_sequence']:.2f} each) + overhead {sv['overhead']:.1f} = {sv['total']:.1f} GiB",
             f"    {mem['gpu_memory_gib']:g} GiB x engine.gpu_memory_utilization = {sv['budget']:.1f} GiB holds the "
             f"KV cache of {sv['fit_sequences']} sequences of {sv['seq_len']:,} tokens"
             + ("" if sv["fit_sequences"] >= sv["sequences"] else f" (fewer than the {sv['sequences']} asked)")
             + f", or {sv['fit_longest']} of the longest expected request ({sv['longest_request']:,.0f} tokens)"]
    strategy = {"ddp": "data parallel (a full copy per GPU)", "fsdp": "FSDP", "deepspeed": "DeepSpeed ZeRO-3"}
    how = strategy[tr["strategy"]] + (f" over {tr['workers']} workers" if tr["workers"] > 1 else "")
    if tr["cpu_offload"] and tr["strategy"] != "ddp":
        how += ", CPU offload"
    lines.append(f"  training, {how}, {tr['seq']:,} tokens, batch 1: weights {tr['weights']:.1f} + adapter "
                 f"{tr['adapter']:.1f} + activations {tr['activations']:.1f} + logits {tr['logits']:.1f} + overhead "
                 f"{tr['overhead']:.1f} = {tr['total']:.1f} GiB: "
                 f"{'fits' if tr['total'] <= mem['gpu_memory_gib'] else 'does not fit'} "
                 f"in {mem['gpu_memory_gib']:g} GiB")
    return lines


def assumption_lines(est: dict) -> list[str]:
    per_word = ", ".join(f"{k} {v:g}" for k, v in est["tokens_per_word"].items())
    return ["assumptions (estimate.*): " + ", ".join([
        f"initial_words={est['initial_words']:g}", f"growth_per_round={est['growth_per_round']:g}",
        f"carryover={est['carryover']:g}", f"instruction_words={est['instruction_words']:g}",
        f"tokens_per_word=({per_word})", f"augment_pass_rate={est['augment_pass_rate']:g}",
        f"judge_yes_rate={est['judge_yes_rate']:g}", f"generate_pass_rate={est['generate_pass_rate']:g}",
        f"extend_accept_rate={est['extend_accept_rate']:g}", f"concurrent_sequences={est['concurrent_sequences']}",
        f"gpu_memory_gib={est['gpu_memory_gib']:g}"]),
        "  every extension round grows the text by growth_per_round and every try runs all rounds; "
        f"length-biased resampling keeps {tokens.DROP_SHORT_KEEP:.1%}; lengths are means, capped by max_tokens "
        "and the context"]


def run_estimate(overrides: list[str]) -> tuple[dict, str]:
    settings = preflight.settings(compose(overrides), "estimate", inputs.CONFIG_CHECK, here=False)  # every problem at once
    if settings.estimate.verb == "rl":
        result = compute_rl(settings)
        text = render_rl(result)
    else:
        result = compute(settings)
        text = render(result)
    out = settings.estimate.out
    if out:
        artifacts.write_json(Path(out).expanduser(), result)
        text += f"\nwritten: {out}"
    return result, text


def main(argv: list[str]) -> None:
    """The verb's entry (config/verbs.py): the run's config composed (as `run` would) and
    costed; no Hydra job, nothing written unless estimate.out."""
    _, text = run_estimate([a for a in argv if a != "--debug"])
    print(text)
