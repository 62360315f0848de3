#!/usr/bin/env bash
# The GPU benchmark (bench/gpu_bench.py, bench/README.md): bench/gpu.sh [--smoke] [gpu_bench.py flags]
# Bounded to 8 minutes. PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  # paw_jax.config needs ml-collections, which the GPU image lacks: install the wheel carried here, beside the image.
  DEPS=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$DEPS" bench/wheels/ml_collections-*.whl
  export PYTHONPATH="$PYTHONPATH:$DEPS"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}  # default 0.75 leaves 20 GB unused
exec timeout 480 "$PYTHON" bench/gpu_bench.py "$@"
