"""What a model folder must hold before an engine or a trainer is started on it: a
config.json, weights, a tokenizer with a chat template; and the context length its
config.json declares. A hub id is looked up in the local Hugging Face cache (without a
download) so that an offline machine is told at once how to fetch it."""
from __future__ import annotations

import json
import os
from pathlib import Path

from selflengthen.core import suggested

WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (its config.json is cached), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def hub_problems(repo_id: str, key: str = "model.path") -> tuple[list[str], int | None]:
    """Problems of a hub id: none while online (it is downloaded on first use); offline, it
    must be in the local cache. Returns the problems and the model's context, when known."""
    snapshot = hub_snapshot(repo_id)
    if snapshot is not None:
        return folder_problems(snapshot, key, shown=repo_id)
    fetch = (f"download it first where there is a network: {suggested.HF_DOWNLOAD} {repo_id} (then copy "
             f"~/.cache/huggingface here), or give a local model folder")
    if offline():
        return [f"{key}={repo_id} is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE or "
                f"TRANSFORMERS_OFFLINE is set); {fetch}"], None
    unreachable = hub_unreachable()
    if unreachable:
        return [f"{key}={repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
                f"({unreachable}); {fetch}"], None
    return [], None


def hub_unreachable(timeout_s: float = 5.0) -> str | None:
    """Why the Hugging Face endpoint (HF_ENDPOINT) cannot be reached, or None: one TCP connect,
    so that an uncached model on a machine without the hub fails in seconds, not after the
    engine's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{url.scheme}://{url.hostname}:{port}: {exc.strerror or exc}"
    return None


def folder_problems(folder: Path, key: str = "model.path", shown: str | None = None) -> tuple[list[str], int | None]:
    """Problems of a local model folder, and the context length its config.json declares."""
    name = shown or str(folder)
    config = folder / "config.json"
    if not config.is_file():
        return [f"{key}={name} is a folder but not a model: it has no config.json; give the folder that holds a "
                f"Hugging Face model (config.json, *.safetensors weights, tokenizer files)"], None
    out = []
    try:
        conf = json.loads(config.read_text(encoding="utf-8"))
        assert isinstance(conf, dict)
    except (ValueError, UnicodeDecodeError, AssertionError):
        conf = {}
        out.append(f"{key}={name}: config.json is not a JSON object; restore the model's config.json")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHTS):
        out.append(f"{key}={name} has no weights (no *.safetensors or *.bin file); copy or download the model's "
                   f"weight files into it")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        out.append(f"{key}={name} has no tokenizer (no tokenizer.json or tokenizer_config.json); save the model's "
                   f"tokenizer into it (AutoTokenizer.from_pretrained(...).save_pretrained(folder))")
    elif not has_chat_template(folder):
        out.append(f"{key}={name}: its tokenizer has no chat template, so it is not a chat model; use the model's "
                   f"instruct/chat variant, or add a \"chat_template\" to its tokenizer_config.json")
    return out, context_length(conf)


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tok = folder / "tokenizer_config.json"
    try:
        return bool(json.loads(tok.read_text(encoding="utf-8")).get("chat_template")) if tok.is_file() else False
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def context_length(conf: dict) -> int | None:
    """The positions the model was built for (None when unknown or stretched by rope scaling)."""
    for part in (conf, conf.get("text_config") or {}):
        if not isinstance(part, dict) or part.get("rope_scaling"):
            continue
        for k in CONTEXT_KEYS:
            if isinstance(part.get(k), int) and part[k] > 0:
                return part[k]
    return None
