"""The engine contract's shared pieces (usage accounting, replica routing) and the
transformers engine on the real tiny model (no Ray: the engine object itself)."""
from __future__ import annotations

import asyncio

import pytest

from selflengthen.engines import Completion, Request, Sampling, UsageMeter, complete_all, merge_usage, usage_delta
from selflengthen.engines.replicas import EnginePool


def test_usage_meter_delta_and_merge():
    meter = UsageMeter(paths={"generator": "/a"})
    meter.record(None, Completion("x", 10, 3))
    before = meter.snapshot()
    meter.record("generator", Completion("y", 7, 5))
    meter.record(None, Completion("z", 1, 1))
    delta = usage_delta(before, meter.snapshot())
    assert delta == {"base": {"path": None, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1},
                     "generator": {"path": "/a", "requests": 1, "prompt_tokens": 7, "completion_tokens": 5}}
    merged = merge_usage([delta, delta])
    assert merged["generator"]["completion_tokens"] == 10 and merged["base"]["requests"] == 2


def _pool(n):
    pool = EnginePool.__new__(EnginePool)  # routing only: no actors
    pool.workers = [object()] * n
    pool.outstanding, pool.served = [0] * n, [0] * n
    from collections import OrderedDict

    pool.routes = OrderedDict()
    return pool


def test_pool_routes_to_the_least_loaded_replica_and_keeps_a_sample_on_one():
    pool = _pool(3)
    pool.outstanding = [5, 1, 3]
    assert pool.pick("a") == 1
    pool.outstanding = [0, 9, 0]
    assert pool.pick("a") == 1  # sticky: sample a's later calls stay where its prefix is cached
    assert pool.pick("b") == 0
    pool.outstanding[0] += 1
    assert pool.pick(None) == 2


@pytest.fixture(scope="module")
def transformers_engine(tiny_model):
    from selflengthen.engines.transformers_engine import TransformersEngine

    return TransformersEngine(str(tiny_model), {}, {"max_model_len": 2048, "max_num_seqs": 8, "seed": 0,
                                                    "dtype": "float32"}, ["<|im_end|>"])


@pytest.mark.slow
def test_transformers_engine_batches_requests_and_honours_stops(transformers_engine):
    engine = transformers_engine
    reqs = [Request([{"role": "user", "content": f"Write about the json module {i}."}]) for i in range(3)]
    reqs.append(Request([{"role": "user", "content": "Continue."}], prefix="Instruction 1: Write about sets.\n"
                        "Instruction 2:"))
    outs = asyncio.run(complete_all(engine, reqs, Sampling(max_tokens=48, stop=("\n\n\n", "Instruction 3"))))
    assert len(outs) == 4 and all(isinstance(o.text, str) for o in outs)
    assert all(0 < o.completion_tokens <= 48 for o in outs)
    assert all("Instruction 3" not in o.text and "\n\n\n" not in o.text for o in outs)
    assert all(o.prompt_tokens == len(engine.render(r)) for o, r in zip(outs, reqs))
    assert engine.usage()["base"]["requests"] == 4
    long = Request([{"role": "user", "content": "word " * 5000}])  # fills the context: nothing generated
    assert asyncio.run(engine.complete(long, Sampling(max_tokens=8))).finish_reason == "no_room"


@pytest.mark.slow(minutes=2)
def test_the_loop_runs_two_iterations_on_the_transformers_engine(tmp_path, model_cache, tiny_model):
    """`engine=transformers` through the real CLI: every stage of 2 iterations on the same
    contract, iteration 2 serving iteration 1's adapters (PEFT, switched per request group)."""
    import json

    from selflengthen.store import artifacts
    from tests.conftest import REPO, run_cli

    proc = run_cli("run", "engine=transformers", "iterations=2", "run.name=hf", f"paths.iterations_dir={tmp_path}",
                   f"paths.cache_dir={model_cache}", "loop.augment.new_per_language=8", "eval.every_iteration=false",
                   "loop.sampling.max_tokens=512",  # the preset's cap is for 4 iterations of growth
                   # the engine is under test, not the filters: keep every accepted extension, and
                   # accept any growth (the toy's extensions were kept 2 of 12 here at 1.2)
                   "loop.extend.min_growth=1.05", "loop.extend.drop_short=false", "progress=false", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    log = proc.stdout + proc.stderr
    assert log.count("starting the transformers engine") == 2 and "starting the vllm engine" not in log
    paths = artifacts.RunPaths(tmp_path / "hf")
    for k in (1, 2):
        it = paths.iteration(k)
        assert all(it.stage_done(stage) for stage in artifacts.STAGES), k
        instructions = artifacts.read_jsonl(it.instructions)
        initial = artifacts.read_jsonl(it.initial)
        assert instructions and initial and {r["instruction_id"] for r in initial} <= {r["id"] for r in instructions}
        usage = json.loads(it.stage_manifest("engine_usage").read_text())
        assert all(usage[stage]["completion_tokens"] > 0 for stage in ("augment", "generate", "extend"))
    assert artifacts.read_jsonl(paths.iteration(1).extended)
    second = json.loads(paths.iteration(2).stage_manifest("engine_usage").read_text())
    assert second["generate"]["adapters"]["generator"]["path"] == str(paths.iteration(1).adapter("generator"))
    assert second["extend"]["adapters"]["extender"]["path"] == str(paths.iteration(1).adapter("extender"))
