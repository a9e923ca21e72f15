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
# Nor with ggml's AMX kernels, which -march=native turns on where the CPU has AMX: on such a
# VM here the first decode of a plain `Llama` segfaulted in ggml_backend_amx_mul_mat. The
# workers never load them (use_extra_bufts off); the tests, the benchmarks' floor and the
# peers did. An explicit -mno-* outranks -march=native whatever their order.
if [[ $(uname -m) == x86_64 ]]; then
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CFLAGS="${CFLAGS:-} $NO_AMX" CXXFLAGS="${CXXFLAGS:-} $NO_AMX"
fi
echo "==> installing inferq with its dev and mlx extras (llama-cpp-python compiles once, ~6 min on 2 cores; pip caches the wheel)"
# The constraint keeps every later resolution on the torch installed above.
set +e
"$VENV/bin/pip" install --progress-bar on -e '.[dev,mlx]' torch==2.13.0 2>&1 \
  | grep -v "^WARNING: Location 'file:"
status=${PIPESTATUS[0]}
set -e
[[ $status -eq 0 ]] || { echo "pip install failed ($status)" >&2; exit "$status"; }
"$VENV/bin/python" -c 'import llama_cpp, inferq' || { echo "install failed" >&2; exit 1; }
# A wheel cached before the AMX flags (pip keys it by version alone) still has the kernels.
GGML_CPU=$("$VENV/bin/python" -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so")')
if [[ $(uname -m) == x86_64 ]] && grep -q "AMX is not ready" "$GGML_CPU"; then
  echo "==> rebuilding llama-cpp-python without AMX kernels (~6 min; the cached wheel had them)"
  "$VENV/bin/pip" cache remove llama_cpp_python >/dev/null 2>&1 || true
  "$VENV/bin/pip" install --quiet --force-reinstall --no-deps "$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
  ! grep -q "AMX is not ready" "$GGML_CPU" || { echo "llama-cpp-python still has AMX" >&2; exit 1; }
fi
touch "$VENV/.installed"
