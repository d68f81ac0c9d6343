#!/usr/bin/env bash
# The GPU check in one call (see scripts/gpu_check.py): bash scripts/gpu_check.sh OUT_DIR
exec python3 "$(dirname "${BASH_SOURCE[0]}")/gpu_check.py" "$@"
