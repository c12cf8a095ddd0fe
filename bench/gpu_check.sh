#!/usr/bin/env bash
# The one prepared GPU check (see bench/gpu_check.py): installs into a venv of its own, builds and times the
# TensorRT engines, compares them with ONNX Runtime, trains with and without AMP, writes gpu_check.{json,md}.
#   bench/gpu_check.sh --out "$OUT"           on a GPU machine (about 8 minutes)
#   bench/gpu_check.sh --dry-run --out DIR    here, on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && [[ " $* " == *" --dry-run "* ]]; then PY=.venv/bin/python; else PY=$(command -v python3); fi
fi
exec "$PY" bench/gpu_check.py "$@"
