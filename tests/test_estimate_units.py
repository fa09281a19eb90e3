"""The estimate's arithmetic against hand-computed numbers (tokens, memory, FLOPs, model
shapes), a previous run's throughput read from files the real writers wrote, and the
placement check against a faked cluster."""
from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from selflengthen.config import schema
from selflengthen.core.errors import UserError
from selflengthen.core.resample import drop_short
from selflengthen.estimate import arch, measured, memory, settings, tokens
from selflengthen.pipeline import stage
from selflengthen.store import artifacts
from selflengthen.training import ray_train

ENGINE_STAGES = ["augment", "generate", "extend"]  # the loop's engine stages (pipeline/stages: test_stage_list.py)

GIB = 1024 ** 3


def shape(**over) -> tokens.Shape:
    base = dict(languages=("en",), new_per_language=10, augment_tries=2, augment_max_tokens=100, judge_max_tokens=8,
                samples=2, generate_retries=2, generate_drop_short=False, attempts=2, extend_retries=2, rounds=2,
                extend_drop_short=False, max_tokens=1000, max_model_len=10_000, line_keep_prob=0.5, epochs=2,
                train_max_length=300, iterations=2,
                template_words={"en": {"augment": 10, "judge": 5, "extend": 20, "list_item": 2}})
    return tokens.Shape(**{**base, **over})


def assume(**over) -> tokens.Assumptions:
    base = dict(initial_words=100, growth_per_round=1.5, carryover=1.0, instruction_words=10,
                tokens_per_word={"en": 1.0}, chat_overhead_tokens=0, augment_pass_rate=0.5, judge_yes_rate=0.5,
                generate_pass_rate=0.5, extend_accept_rate=0.5)
    return tokens.Assumptions(**{**base, **over})


# --- tries, resampling --------------------------------------------------------------------

def test_expected_tries_and_success():
    assert tokens.expected_tries(0.5, 3) == pytest.approx(1 + 0.5 + 0.25)
    assert tokens.success(0.5, 3) == pytest.approx(0.875)
    assert tokens.expected_tries(1.0, 20) == 1.0
    assert tokens.expected_tries(0.0, 5) == 5.0


def test_drop_short_share_matches_the_real_resampler():
    assert tokens.DROP_SHORT_KEEP == pytest.approx(0.5953, abs=1e-4)
    items = list(range(20_000))
    kept = drop_short(items, items, seed=3)
    assert len(kept) / len(items) == pytest.approx(tokens.DROP_SHORT_KEEP, abs=0.01)


# --- stages, by hand ---------------------------------------------------------------------

def test_augment_by_hand():
    stage, accepted = tokens.augment(shape(), assume(), "en")
    # accept = 0.5 x 0.5; tries 1 + 0.75 = 1.75 -> 17.5 candidates of prompt 10 + 3x2 + 2x10 = 36, 10 out;
    # 8.75 judged of prompt 5 + 10 = 15, 2 out
    assert stage.requests == pytest.approx(17.5 + 8.75)
    assert stage.prompt_tokens == pytest.approx(17.5 * 36 + 8.75 * 15)
    assert stage.generated_tokens == pytest.approx(17.5 * 10 + 8.75 * 2)
    assert accepted == pytest.approx(10 * (1 - 0.75 ** 2))


def test_generate_by_hand():
    stage, kept, words = tokens.generate(shape(), assume(), "en", instructions=4, words=100)
    # 8 samples x 1.5 tries, prompt 10, 100 out; 8 x 0.75 pass
    assert (stage.requests, stage.prompt_tokens, stage.generated_tokens) == pytest.approx((12, 120, 1200))
    assert (kept, words) == pytest.approx((6, 100))
    _, kept, _ = tokens.generate(shape(generate_drop_short=True), assume(), "en", instructions=4, words=100)
    assert kept == pytest.approx(6 * tokens.DROP_SHORT_KEEP)


def test_one_extension_try_by_hand():
    stage, extended = tokens.extension_try(shape(), assume(), "en", words=100)
    # round 1: stage 1 prompt 20+10+50=80 writes 75, keeps 50; stage 2 prompt 20+10+100+50=180 writes 150-50=100
    # round 2 (150 words): prompt 105 writes 112.5, keeps 75; prompt 30+150+75=255 writes 225-75=150
    assert stage.requests == 4
    assert stage.prompt_tokens == pytest.approx(80 + 180 + 105 + 255)
    assert stage.generated_tokens == pytest.approx(75 + 100 + 112.5 + 150)
    assert extended == pytest.approx(225)
    assert stage.longest == pytest.approx(255 + 150)


def test_extension_is_capped_by_max_tokens_and_the_context():
    _, extended = tokens.extension_try(shape(max_tokens=60), assume(), "en", words=100)
    assert extended == pytest.approx(100)  # 40 kept + 60 written is no longer: the best stays
    stage, _ = tokens.extension_try(shape(max_model_len=150, rounds=1), assume(), "en", words=100)
    # stage 1 (prompt 80) has 70 tokens of room; stage 2's prompt (30 + 100 + 46.7) none
    assert stage.generated_tokens == pytest.approx(70)


def test_extend_stage_by_hand():
    stage, kept, words = tokens.extend(shape(), assume(), "en", initial=6, words=100)
    tries = 6 * 2 * 1.5  # attempts x expected tries
    assert stage.requests == pytest.approx(tries * 4)
    assert stage.generated_tokens == pytest.approx(tries * 437.5)
    assert (kept, words) == pytest.approx((12 * 0.75, 225))


def test_training_rows_are_cut_at_max_length():
    rows = tokens.training_rows(shape(), assume(), "en", rows=6, initial_words=100, extended_words=225)
    assert rows["generator"] == {"rows": 6, "tokens_per_row": pytest.approx(10 + 225)}
    assert rows["extender"]["tokens_per_row"] == 300  # 20 + 10 + 0.5 x 100 + 225 = 305, cut at 300


def test_iterations_carry_the_extended_length_over():
    its = tokens.iterations(shape(), assume(), ENGINE_STAGES)
    assert [it.k for it in its] == [1, 2]
    assert its[0].words["en"] == pytest.approx({"initial": 100, "extended": 225})
    assert its[1].words["en"]["initial"] == pytest.approx(225)
    rows = 10 * (1 - 0.75 ** 2) * 2 * 0.75 * 2 * 0.75  # accepted x samples x pass x attempts x accepted
    assert its[0].counts["extended"] == pytest.approx(rows)
    assert its[0].training_tokens(2) == pytest.approx(2 * rows * (235 + 300))
    half = tokens.iterations(shape(), assume(carryover=0.5), ENGINE_STAGES)
    assert half[1].words["en"]["initial"] == pytest.approx(112.5)


# --- model shapes -----------------------------------------------------------------------

def test_parameter_counts_match_the_published_models():
    assert arch.params(arch.KNOWN["Qwen/Qwen2.5-7B-Instruct"]) == 7_615_616_512
    assert arch.params(arch.KNOWN["meta-llama/Llama-3.1-8B-Instruct"]) == 8_030_261_248
    assert arch.params(arch.KNOWN["meta-llama/Llama-3.1-70B-Instruct"]) == 70_553_706_496
    assert arch.params(arch.KNOWN["Qwen/Qwen2.5-72B-Instruct"]) == 72_706_203_648
    assert arch.params(arch.KNOWN["embedded:smollm2-135m"]) == 134_515_008


def test_lora_and_kv_by_hand():
    tiny = arch.KNOWN["embedded:tiny"]  # hidden 128, q 128, kv 64, mlp 384
    per_layer = (128 + 128) + (128 + 64) * 2 + (128 + 128) + (128 + 384) * 3
    assert arch.lora_params(tiny, 16) == 2 * 16 * per_layer
    qwen = arch.KNOWN["Qwen/Qwen2.5-7B-Instruct"]
    assert arch.kv_bytes_per_token(qwen, 2) == 2 * 28 * 4 * 128 * 2
    assert arch.kv_bytes_per_token(qwen, 2, tensor_parallel=2) == 2 * 28 * 2 * 128 * 2
    assert arch.kv_bytes_per_token(qwen, 2, tensor_parallel=8) == 2 * 28 * 1 * 128 * 2  # fewer heads: replicated


def test_shape_from_a_config_json(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "hidden_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 2, '
        '"num_hidden_layers": 2, "intermediate_size": 4096, "vocab_size": 32000, "tie_word_embeddings": false}')
    a = arch.lookup(str(tmp_path), tmp_path)
    assert (a.layers, a.head_dim, a.kv_heads, a.qkv_bias) == (2, 128, 2, False)
    assert arch.params(a) == 2 * 32000 * 1024 + 2 * (1024 * 1024 * 2 + 1024 * 256 * 2 + 3 * 1024 * 4096 + 2048) + 1024
    assert arch.lookup("/models/Llama-3.1-8B-Instruct").name == "meta-llama/Llama-3.1-8B-Instruct"
    assert arch.lookup("someone/unknown-model") is None


# --- memory and FLOPs ---------------------------------------------------------------------

TOY = arch.Arch("toy", layers=2, hidden=1024, heads=8, kv_heads=2, head_dim=128, intermediate=4096, vocab=32000)


def test_serving_memory_by_hand():
    m = memory.serving_gib(TOY, dtype_bytes=2, tensor_parallel=1, seq_len=1024, sequences=4, max_loras=2,
                           lora_rank=8, overhead_gib=1.0)
    assert m["weights"] * GIB == arch.params(TOY) * 2
    assert m["kv_per_sequence"] * GIB == 1024 * (2 * 2 * 2 * 128 * 2)
    assert m["kv"] == pytest.approx(4 * m["kv_per_sequence"])
    assert m["lora"] * GIB == 2 * arch.lora_params(TOY, 8) * 2
    assert m["total"] == pytest.approx(m["weights"] + m["lora"] + m["kv"] + 1.0)
    room = 2.0 - m["weights"] - m["lora"] - 1.0
    assert memory.sequences_that_fit(m, 2.0) == int(room // m["kv_per_sequence"])


def test_training_memory_by_hand_and_by_strategy():
    kw = dict(seq=1000, rank=8, gradient_checkpointing=True, overhead_gib=0.0)
    ddp = memory.training_gib(TOY, workers=4, strategy="ddp", cpu_offload=False, **kw)
    assert ddp["weights"] * GIB == arch.params(TOY) * 2
    assert ddp["adapter"] * GIB == arch.lora_params(TOY, 8) * 16
    assert ddp["activations"] * GIB == 2 * 1000 * 1024 * 2 + 1000 * (12 * 1024 + 5 * 4096) * 2
    assert ddp["logits"] * GIB == pytest.approx(1000 * 32000 * 10.3)
    zero3 = memory.training_gib(TOY, workers=4, strategy="deepspeed", cpu_offload=False, **kw)
    gathered = (2 * 32000 * 1024 + arch.layer_params(TOY)) * 2  # the embeddings + head unit and a layer
    assert zero3["weights"] * GIB == pytest.approx(min(arch.params(TOY) * 2, arch.params(TOY) * 2 / 4 + gathered))
    assert zero3["adapter"] == pytest.approx(ddp["adapter"] / 4)
    offload = memory.training_gib(TOY, workers=4, strategy="fsdp", cpu_offload=True, **kw)
    assert offload["weights"] * GIB == pytest.approx(gathered)
    assert offload["adapter"] * GIB == arch.lora_params(TOY, 8) * 4  # its states are on the host
    assert offload["activations"] == ddp["activations"]  # each worker computes its own sequence


def test_training_memory_matches_the_h100_measurement():
    """scripts/measure_train_memory.py on an H100 (bf16, rank-16 all-linear LoRA, gradient
    checkpointing, batch 1): peak allocated 45.90 GiB (Qwen2.5-7B) and 43.24 GiB (Llama-3.1-8B)
    at 16,384 tokens, 18.66 and 18.96 GiB at 2,048."""
    qwen, llama = "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"
    for name, seq, peak in ((qwen, 16384, 45.90), (llama, 16384, 43.24), (qwen, 2048, 18.66), (llama, 2048, 18.96)):
        est = memory.training_gib(arch.KNOWN[name], seq=seq, rank=16, workers=1, strategy="ddp", cpu_offload=False,
                                  gradient_checkpointing=True, overhead_gib=0.0)
        assert est["total"] == pytest.approx(peak, rel=0.03), name


def test_training_flops_and_hours_by_hand():
    n = arch.params(TOY)
    assert memory.train_flops_per_token(TOY, 1000) == 6 * n + 4 * (2 * 2 * 2 * 1024 * 500)
    h = memory.training_gpu_hours(10, 1000, 2, TOY, tflops=100, mfu=0.5)
    assert h == pytest.approx(2 * 10 * 1000 * memory.train_flops_per_token(TOY, 1000) / (100e12 * 0.5) / 3600)


# --- settings -------------------------------------------------------------------------------

def test_estimate_settings_are_checked():
    from selflengthen import preflight
    from selflengthen.commands.estimate import compose

    cfg = compose(["estimate.mfu=2", "estimate.gpus=0", "model.languages=[en,zh]", "~estimate.tokens_per_word.zh"])
    found = preflight.problems(cfg, settings.CONFIG_CHECK, verb="estimate", here=False)
    assert any(line.startswith("estimate.mfu=2") and "<= 1" in line for line in found), found
    assert any(line.startswith("estimate.gpus=0") for line in found), found
    assert not any("tokens_per_word" in line for line in found), found  # estimate.* has a bad value: not checked yet
    found = preflight.problems(compose(["model.languages=[en,zh]", "~estimate.tokens_per_word.zh"]),
                               settings.CONFIG_CHECK, verb="estimate", here=False)
    assert found == ["estimate.tokens_per_word has no value for language 'zh'; add estimate.tokens_per_word.zh=1.3"]
    assert settings.train_placement(schema.Train()) == {"workers": 1, "strategy": "ddp", "cpu_offload": False,
                                                        "num_gpus": 1.0}


# --- a previous run's throughput ---------------------------------------------------------------

def usage(requests: int, prompt: int, completion: int) -> dict:
    return {"base": {"path": None, "requests": requests, "prompt_tokens": prompt, "completion_tokens": completion}}


def fake_run(root, tp: int = 1) -> artifacts.RunPaths:
    """A run folder as the loop leaves it: config.yaml and engine_usage.json (pipeline/stage.record_engine_usage)."""
    paths = artifacts.RunPaths(root)
    root.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": {"path": "embedded:tiny"}, "engine": {"tensor_parallel_size": tp}}),
                   paths.config)
    for k in (1, 2):
        it = paths.iteration(k)
        nothing = [{}, {}]
        stage.record_engine_usage(it, "augment", nothing, [usage(10, 100, 200), usage(10, 100, 200)], 2.0)
        stage.record_engine_usage(it, "generate", nothing, [usage(5, 50, 1000), usage(5, 50, 1000)], 4.0)
        stage.record_engine_usage(it, "extend", nothing, [usage(8, 400, 3000), usage(8, 400, 3000)], 10.0)
    return paths


def test_throughput_of_a_previous_run(tmp_path):
    found = measured.throughput(fake_run(tmp_path / "r", tp=2).root, ENGINE_STAGES)
    # per stage: tokens of both iterations / (seconds x 2 replicas x tensor parallel 2)
    assert found["per_stage"] == {"augment": 2 * 400 / (2 * 2.0 * 4), "generate": 2 * 2000 / (2 * 4.0 * 4),
                                  "extend": 2 * 6000 / (2 * 10.0 * 4)}
    assert found["iterations"] == [1, 2] and found["model"] == "embedded:tiny"
    assert found["all"] == pytest.approx(2 * 8400 / (2 * 16.0 * 4), abs=0.1)


def test_a_run_without_measurements_is_one_line(tmp_path):
    (tmp_path / "empty" / "iter_1").mkdir(parents=True)
    with pytest.raises(UserError, match="no measured stage"):
        measured.throughput(tmp_path / "empty", ENGINE_STAGES)
    with pytest.raises(UserError, match="no such run folder"):
        measured.run_folder(str(tmp_path / "nowhere"), str(tmp_path))
    assert measured.run_folder("empty", str(tmp_path)) == tmp_path / "empty"


# --- placement ------------------------------------------------------------------------------

def cfgs(replicas="auto", tp=1, kind="vllm", num_gpus=1, workers=1, strategy="ddp", num_cpus=1):
    engine = (schema.OpenaiEngine(base_url="http://127.0.0.1:8000/v1") if kind == "openai" else
              schema.VllmEngine(seed=0, max_lora_rank=16, replicas=replicas, tensor_parallel_size=tp))
    role = {"num_gpus": num_gpus, "num_cpus": num_cpus, "workers": workers, "strategy": strategy}
    return engine, [role, dict(role)]  # generator and extender


def test_placement_fits_or_names_what_is_missing():
    fits = ray_train.placement_problem
    assert fits(*cfgs(), total_gpus=0, node_gpus=[], total_cpus=2) is None  # CPUs only: served and trained on CPUs
    assert fits(*cfgs(replicas=8, workers=8), total_gpus=8, node_gpus=[8], total_cpus=64) is None
    assert fits(*cfgs(tp=4, workers=4), total_gpus=8, node_gpus=[4, 4], total_cpus=64) is None
    line = fits(*cfgs(tp=8), total_gpus=8, node_gpus=[4, 4], total_cpus=64)
    assert "engine.tensor_parallel_size=8 GPUs on one node and the largest node has 4" in line
    line = fits(*cfgs(replicas=4, tp=2, workers=6), total_gpus=4, node_gpus=[4], total_cpus=64)
    assert "engine.replicas=4 x engine.tensor_parallel_size=2 = 8 GPUs and the cluster has 4" in line
    assert "train.workers=6 x train.num_gpus=1 needs 6 GPUs" in line and "\n" not in line
    assert line.count("train.workers=6") == 1  # the two roles' identical problem is said once
    line = fits(*cfgs(num_gpus=8), total_gpus=16, node_gpus=[8, 8, 0], total_cpus=64)
    assert line is None
    line = fits(*cfgs(num_gpus=2), total_gpus=2, node_gpus=[1, 1], total_cpus=64)
    assert "train.num_gpus=2 GPUs on one node" in line
    assert fits(*cfgs(kind="openai", tp=8), total_gpus=1, node_gpus=[1], total_cpus=8) is None
    line = fits(*cfgs(workers=2, strategy="fsdp"), total_gpus=0, node_gpus=[], total_cpus=2)
    assert "train.strategy=fsdp needs GPUs" in line


def test_check_placement_reads_the_cluster(monkeypatch):
    monkeypatch.setattr(ray_train.ray, "cluster_resources", lambda: {"CPU": 32.0, "GPU": 2.0})
    monkeypatch.setattr(ray_train.ray, "nodes", lambda: [{"Alive": True, "Resources": {"GPU": 2.0}},
                                                       {"Alive": False, "Resources": {"GPU": 8.0}}])
    with pytest.raises(UserError, match=r"train.workers=4 x train.num_gpus=1 needs 4 GPUs"):
        ray_train.check_placement(*cfgs(tp=1, workers=4))
    with pytest.raises(UserError, match=r"tensor_parallel_size=4 GPUs on one node and the largest node has 2"):
        ray_train.check_placement(*cfgs(tp=4))  # the dead node's GPUs do not count
    ray_train.check_placement(*cfgs(tp=2, workers=2))  # fits: no error


def test_tensor_parallel_replicas_run_their_workers_inside_the_actor():
    """A replica's actor sits in a placement group; vLLM would then start Ray workers of one
    GPU per bundle, so tensor parallelism asks for its multiprocessing backend instead."""
    from selflengthen.engines.replicas import engine_options

    model = schema.Model(name="m", path="m", languages=["en"], end_of_turn=[], max_model_len=4096, dtype="bfloat16")
    engine = schema.VllmEngine(seed=0, max_lora_rank=16)
    assert "distributed_executor_backend" not in engine_options(engine, model, gpus=8)
    engine = engine.model_copy(update={"tensor_parallel_size": 4})
    options = engine_options(engine, model, gpus=8)
    assert options["distributed_executor_backend"] == "mp" and options["tensor_parallel_size"] == 4
    assert options["trust_remote_code"] is False


def test_a_cpu_replica_runs_the_model_in_its_own_process_unless_told_not_to(monkeypatch):
    """On a CPU, one-way replicas ask vLLM for its in-process executor, and the engine sets
    the environment that lets the CPU platform keep it, splitting the host's cores between
    the replicas; a user's own setting wins."""
    from selflengthen.engines.replicas import engine_options
    from selflengthen.engines.vllm_engine import cpu_threads, single_process

    model = schema.Model(name="m", path="m", languages=["en"], end_of_turn=[], max_model_len=4096, dtype="float32")
    engine = schema.VllmEngine(seed=0, max_lora_rank=16, cpu_single_process=True)
    assert engine_options(engine, model, gpus=0)["distributed_executor_backend"] == "uni"
    assert engine_options(engine, model, gpus=0, replicas=2)["cpu_replicas"] == 2
    assert "cpu_replicas" not in engine_options(engine, model, gpus=1, replicas=2)
    assert "distributed_executor_backend" not in engine_options(engine, model, gpus=1)  # GPUs: vLLM's default
    engine = engine.model_copy(update={"cpu_single_process": False})
    assert "distributed_executor_backend" not in engine_options(engine, model, gpus=0)

    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "0")  # recorded, so the teardown restores the real value
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    options = {"distributed_executor_backend": "uni"}
    single_process(options)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and options["distributed_executor_backend"] == "uni"
    assert os.environ["OMP_NUM_THREADS"] == "4"  # in-process the model takes every core of the process
    assert cpu_threads(2) == 2 and cpu_threads(8) == 1  # replicas on one host split its cores
    assert cpu_threads(1, cap=1) == 1 and cpu_threads(1, cap=16) == 4  # the driver's OMP_NUM_THREADS caps them
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    single_process(options)
    assert "distributed_executor_backend" not in options and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_cpu_tasks_take_their_grant_capped_by_the_drivers_omp_num_threads(monkeypatch):
    from selflengthen.engines import workers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert workers.thread_cap() is None and workers.task_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert workers.thread_cap() == 1 and workers.task_threads(2) == 1 and workers.task_threads(0.5) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert workers.thread_cap() is None
