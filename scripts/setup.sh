#!/usr/bin/env bash
# Create .venv and install synth with its test extras. Idempotent: skips work already done.
# torch is installed first and pinned, so the CPU build is taken (an unpinned torch pulls CUDA) where
# pip's configured index holds a CPU wheel; elsewhere name PyTorch's CPU index (PyPI's Linux wheel
# of the same version is the CUDA build): TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.synth-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
  .venv/bin/python -m pip install --quiet -e ".[test]"
  rm -f .venv/.synth-setup-*
  touch "$stamp"
fi
