#!/usr/bin/env bash
# Creates the virtualenv and installs inferq with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [[ ! -x $VENV/bin/python ]]; then
  echo "==> creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip wheel
fi
# torch first, pinned: anything later that pulls torch (inferq itself, which exports the
# embedder with it) must find this local CPU build instead of fetching a multi-GB CUDA one.
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "==> installing torch==2.13.0 (CPU build)"
  "$VENV/bin/pip" install --progress-bar on torch==2.13.0
fi
# Built without llamafile's tinyBLAS: exact continuous batching (up to 7 tokens per decode,
# see workers/batching.py) runs 1.6x one job at 8 jobs on this build against 1.2x with it
# (docs/benchmarks.md, "Continuous batching"). pip caches the wheel by version, not by flags.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_LLAMAFILE=OFF}"
echo "==> installing inferq with its dev and mlx extras (llama-cpp-python compiles once, ~6 min on 2 cores; pip caches the wheel)"
# The constraint keeps every later resolution on the torch installed above.
set +e
"$VENV/bin/pip" install --progress-bar on -e '.[dev,mlx]' torch==2.13.0 2>&1 \
  | grep -v "^WARNING: Location 'file:"
status=${PIPESTATUS[0]}
set -e
[[ $status -eq 0 ]] || { echo "pip install failed ($status)" >&2; exit "$status"; }
"$VENV/bin/python" -c 'import llama_cpp, inferq' || { echo "install failed" >&2; exit 1; }
touch "$VENV/.installed"
