#!/usr/bin/env bash
# Creates ./.venv (once), installs torch and the build tools into it, and builds fastrnn
# against that torch. Sourced by scripts/benchmark.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_SPEC="${FASTRNN_TORCH:-torch==2.13.0}"   # any torch >= 2.4 works; set FASTRNN_TORCH to choose
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "$TORCH_SPEC"
python -m pip install -q setuptools wheel ninja numpy "$@"
# Rebuild only when the sources, the build settings or torch changed since the last build.
build_key="$( { python -c "import torch; print(torch.__version__)"
               echo "${FASTRNN_PORTABLE:-} ${FASTRNN_CUDA:-} ${TORCH_CUDA_ARCH_LIST:-}"
               find csrc setup.py pyproject.toml -type f | sort | xargs sha256sum; } | sha256sum )"
stamp=.venv/fastrnn-build.key
if [ "$(cat "$stamp" 2>/dev/null)" != "$build_key" ] || ! python -c "import fastrnn" 2>/dev/null; then
  # --no-build-isolation: build against the torch installed above, not a fresh download.
  python -m pip install -q --no-build-isolation --no-deps -e .
  echo "$build_key" > "$stamp"
fi
