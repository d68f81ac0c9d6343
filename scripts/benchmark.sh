#!/usr/bin/env bash
# Installs fastrnn into ./.venv and benchmarks it against torch.nn (cuDNN on a GPU).
# Arguments go to the benchmark, e.g. --grid anchors --out results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install.sh matplotlib
python -m fastrnn.bench "$@"
