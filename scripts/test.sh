#!/usr/bin/env bash
# Installs fastrnn into ./.venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install.sh pytest hypothesis matplotlib onnx onnxscript onnxruntime reservoirpy
python -m pytest tests -q "$@"
