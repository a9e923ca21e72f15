#!/usr/bin/env bash
# The peers `inferq bench` compares against, in a virtualenv of their own (never inferq's):
#   llama-cpp-python's OpenAI-compatible server on the bundled model, and the LiteLLM proxy
#   (with its Redis cache) in front of it.
#
#   bench/peers.sh install    create .venv-peers from the pinned versions below
#   bench/peers.sh start      start both servers in the background (pids, logs: PEERS_RUN_DIR)
#   bench/peers.sh stop       stop them (by the pids this script wrote)
#
# Env: PEERS_VENV (.venv-peers), LLAMA_PORT (8772), LITELLM_PORT (8773),
#      PEERS_REDIS_URL (redis://127.0.0.1:6379/6), MODEL (the bundled GGUF), N_THREADS (2),
#      PEERS_RUN_DIR (/tmp/inferq-peers), LITELLM_MASTER_KEY (default: a fresh one, written to
#      PEERS_RUN_DIR/litellm.key, where `inferq bench` reads it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/.venv-peers}"
LLAMA_PORT="${LLAMA_PORT:-8772}"
LITELLM_PORT="${LITELLM_PORT:-8773}"
PEERS_REDIS_URL="${PEERS_REDIS_URL:-redis://127.0.0.1:6379/6}"
MODEL="${MODEL:-$HOME/.cache/inferq/models/gemma-3-270m-q4_k_m.gguf}"
N_THREADS="${N_THREADS:-2}"
RUN="${PEERS_RUN_DIR:-/tmp/inferq-peers}"  # pids and logs
# Pinned: the versions the figures in docs/benchmarks.md were measured with.
PINS=("litellm[proxy]==1.108.7" "llama-cpp-python[server]==0.3.36")

install() {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --upgrade pip
  # Built without ggml's AMX kernels, which segfault on this kind of VM (scripts/bootstrap.sh
  # says more); pip reuses the wheel it cached for inferq's venv when there is one.
  if [[ $(uname -m) == x86_64 ]]; then
    export CFLAGS="${CFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CXXFLAGS="${CXXFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  fi
  "$VENV/bin/pip" install "${PINS[@]}"
  "$VENV/bin/pip" freeze | grep -i -E 'litellm|llama'
}

wait_http() {  # url, seconds
  for _ in $(seq 1 "$2"); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    sleep 1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

start() {
  mkdir -p "$RUN"
  [ -f "$MODEL" ] || { echo "no model at $MODEL (run: inferq models assemble)" >&2; exit 1; }
  # --interrupt_requests False: by default a new request cuts the one streaming short, which
  # would make it look fast under concurrency; queued requests must wait their turn instead.
  "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias gemma-3-270m \
    --host 127.0.0.1 --port "$LLAMA_PORT" --n_ctx 2048 --n_threads "$N_THREADS" \
    --n_threads_batch "$N_THREADS" --interrupt_requests False >"$RUN/llama_server.log" 2>&1 &
  echo $! >"$RUN/llama_server.pid"
  wait_http "http://127.0.0.1:$LLAMA_PORT/v1/models" 120
  # The proxy refuses to start without a master key; a fresh one per start, read by the harness.
  if [ -z "${LITELLM_MASTER_KEY:-}" ]; then
    LITELLM_MASTER_KEY="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  fi
  (umask 077; echo "$LITELLM_MASTER_KEY" >"$RUN/litellm.key")
  LLAMA_SERVER_BASE="http://127.0.0.1:$LLAMA_PORT/v1" REDIS_URL="$PEERS_REDIS_URL" \
    LITELLM_MASTER_KEY="$LITELLM_MASTER_KEY" "$VENV/bin/litellm" --config "$ROOT/bench/litellm_config.yaml" --host 127.0.0.1 \
    --port "$LITELLM_PORT" --num_workers 1 >"$RUN/litellm.log" 2>&1 &
  echo $! >"$RUN/litellm.pid"
  wait_http "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 180
  echo "llama_cpp.server http://127.0.0.1:$LLAMA_PORT  litellm http://127.0.0.1:$LITELLM_PORT"
}

stop() {
  for name in litellm llama_server; do
    if [ -f "$RUN/$name.pid" ]; then
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
    fi
  done
  rm -f "$RUN/litellm.key"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
