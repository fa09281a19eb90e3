#!/usr/bin/env bash
# Re-resolve the locked install: the exact versions scripts/setup_venv.sh installs (and so
# `make run`, `make test` and CI test). One deliberate command, `make lock` (or
# `bash scripts/lock.sh cpu|gpu` for one of them); commit what it rewrites and let CI test it.
#   locks/cpu.txt  the CPU stack, frozen from a fresh venv resolved with no lock (what pip
#                  picks today within pyproject.toml's ranges), installed the way setup does
#   locks/gpu.txt  the CUDA stack (extras gpu, test, smollm2), resolved by uv for Linux x86_64
#                  without installing it (no GPU is needed to lock it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
WHAT=${1:-all}

if [ "$WHAT" = all ] || [ "$WHAT" = cpu ]; then
  echo "lock: resolving the CPU stack in a fresh venv (a few minutes)" >&2
  VENV="$TMP/venv" SELFLENGTHEN_LOCK=none SELFLENGTHEN_DEVICE=cpu SELFLENGTHEN_KEEP_TORCHVISION=1 \
    bash scripts/setup_venv.sh >&2
  {
    echo "# The CPU stack that CI tests (extras cpu, test, smollm2). Written by scripts/lock.sh"
    echo "# (make lock) on $(date -u +%F); do not edit by hand."
    "$TMP/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -e '^selflengthen' -e '^pip==' | LC_ALL=C sort -f
  } > locks/cpu.txt
fi
if [ "$WHAT" = all ] || [ "$WHAT" = gpu ]; then
  echo "lock: resolving the GPU stack with uv (metadata only)" >&2
  "$PY" -m pip install -q --target "$TMP/uv" uv >&2
  {
    echo "# The GPU stack (extras gpu, test, smollm2) for Linux x86_64, Python 3.11. Written by"
    echo "# scripts/lock.sh (make lock) on $(date -u +%F); do not edit by hand."
    "$TMP/uv/bin/uv" pip compile pyproject.toml --extra gpu --extra test --extra smollm2 \
      --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --no-annotate \
      --quiet | grep -v '^selflengthen'
  } > locks/gpu.txt
fi
echo "lock: locks/cpu.txt has $(grep -vc '^#' locks/cpu.txt) packages, locks/gpu.txt $(grep -vc '^#' locks/gpu.txt)" >&2
