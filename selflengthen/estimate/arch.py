"""A model's shape, for the memory and FLOPs arithmetic of `estimate`: layers, hidden size,
heads, KV heads, head dim, MLP width, vocabulary. Read from the model's config.json when
the folder (or the Hugging Face cache) holds it, else from a built-in table of the known
presets and their larger siblings (70B), so an estimate needs no download. Pure Python:
no torch, no transformers (scripts/measure_train_memory.py imports it on a bare GPU box).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Arch:
    """The numbers of a decoder-only transformer (Llama / Qwen2 family) that size it."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False
    max_positions: int | None = None
    source: str = "built-in table"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


# The presets in conf/model/ and conf/experiment/, and the 70B siblings the cluster guide
# sizes (their config.json values).
KNOWN: dict[str, Arch] = {a.name: a for a in (
    Arch("Qwen/Qwen2-7B-Instruct", 28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True, max_positions=32768),
    Arch("Qwen/Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True, max_positions=32768),
    Arch("meta-llama/Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 128, 14336, 128256, max_positions=131072),
    Arch("meta-llama/Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 128, 28672, 128256, max_positions=131072),
    Arch("Qwen/Qwen2.5-72B-Instruct", 80, 8192, 64, 8, 128, 29568, 152064, qkv_bias=True, max_positions=32768),
    # Qwen3's per-head q/k norms (2 x 128 weights a layer) are left out: under 10k weights
    Arch("Qwen/Qwen3-4B-Instruct-2507", 36, 2560, 32, 8, 128, 9728, 151936, tied_embeddings=True,
         max_positions=262144),
    Arch("embedded:smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, tied_embeddings=True, max_positions=8192),
    Arch("embedded:tiny", 2, 128, 2, 1, 64, 384, 2048, tied_embeddings=True, max_positions=8192),
)}


def from_config_json(conf: dict, name: str, source: str) -> Arch:
    """An Arch from a Hugging Face config.json (Llama, Qwen2, Mistral, ... key names)."""
    hidden = int(conf["hidden_size"])
    heads = int(conf["num_attention_heads"])
    return Arch(name=name, layers=int(conf["num_hidden_layers"]), hidden=hidden, heads=heads,
                kv_heads=int(conf.get("num_key_value_heads") or heads),
                head_dim=int(conf.get("head_dim") or hidden // heads),
                intermediate=int(conf["intermediate_size"]), vocab=int(conf["vocab_size"]),
                tied_embeddings=bool(conf.get("tie_word_embeddings", False)),
                qkv_bias=bool(conf.get("attention_bias", conf.get("model_type") == "qwen2")),
                max_positions=conf.get("max_position_embeddings"), source=source)


def lookup(model_path: str, folder: Path | None = None) -> Arch | None:
    """The shape of `model_path`: its config.json in `folder` (a local model folder or a
    cached hub snapshot) when readable, else the built-in table (by hub id, or by the
    last path component for a local copy of a known model), else None."""
    if folder is not None and (folder / "config.json").is_file():
        try:
            conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            return from_config_json(conf, model_path, f"{folder / 'config.json'}")
        except (ValueError, KeyError, TypeError):
            pass
    if model_path in KNOWN:
        return KNOWN[model_path]
    tail = Path(model_path).name.lower()
    for name, arch in KNOWN.items():
        if name.split("/")[-1].lower() == tail:
            return arch
    return None


def linear_shapes(a: Arch) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one decoder layer: q, k, v, o, gate, up, down."""
    return [(a.hidden, a.q_dim), (a.hidden, a.kv_dim), (a.hidden, a.kv_dim), (a.q_dim, a.hidden),
            (a.hidden, a.intermediate), (a.hidden, a.intermediate), (a.intermediate, a.hidden)]


def layer_params(a: Arch) -> int:
    """Weights of one decoder layer: its linears, their biases (q, k, v in Qwen2) and 2 norms."""
    linears = sum(i * o for i, o in linear_shapes(a))
    bias = (a.q_dim + 2 * a.kv_dim) if a.qkv_bias else 0
    return linears + bias + 2 * a.hidden


def params(a: Arch) -> int:
    """All weights: embeddings, layers, final norm and the output head (unless tied)."""
    embed = a.vocab * a.hidden
    return embed * (1 if a.tied_embeddings else 2) + a.layers * layer_params(a) + a.hidden


def lora_params(a: Arch, rank: int) -> int:
    """A rank-r LoRA adapter on every linear layer of every decoder layer (all-linear)."""
    return a.layers * sum(rank * (i + o) for i, o in linear_shapes(a))


def kv_bytes_per_token(a: Arch, dtype_bytes: float, tensor_parallel: int = 1) -> float:
    """KV cache of one token on one GPU: K and V of every layer; the KV heads are split
    across the tensor-parallel GPUs (replicated when there are fewer heads than GPUs)."""
    heads_per_gpu = math.ceil(a.kv_heads / tensor_parallel)
    return 2 * a.layers * heads_per_gpu * a.head_dim * dtype_bytes


DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "auto": 2}
