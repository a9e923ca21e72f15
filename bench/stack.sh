#!/usr/bin/env bash
# The inferq stack `inferq bench` measures, on its own port, Redis db and database, so a run
# never shares them with development or tests (docs/benchmarks.md, "Benchmark harness"):
#   API on 8771, one llama.cpp worker on the bundled model, one slow echo worker (the
#   `streams` scenario's idle jobs), Redis db 5, database inferq_bench, tenant `bench` on the
#   `unlimited` tier (no rate limit in the way of a load test).
#
#   bench/stack.sh start     migrate, create the key (once), start all three in the background
#                            (refused while an earlier start is still running)
#   bench/stack.sh stop      stop them (by the pids this script wrote; KILL after 15 s)
#   bench/stack.sh env       print the exports `inferq bench` needs (eval "$(bench/stack.sh env)")
#
# A second set beside this one needs its own BENCH_RUN_DIR, INFERQ_API_PORT, INFERQ_REDIS_URL,
# INFERQ_DATABASE_URL (created if absent), INFERQ_WORKER_METRICS_PORT and BENCH_ECHO_METRICS_PORT.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${BENCH_RUN_DIR:-/tmp/inferq-bench-stack}"
export INFERQ_API_PORT="${INFERQ_API_PORT:-8771}"
export INFERQ_REDIS_URL="${INFERQ_REDIS_URL:-redis://127.0.0.1:6379/5}"
export INFERQ_DATABASE_URL="${INFERQ_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/inferq_bench}"
export INFERQ_WORKER_METRICS_PORT="${INFERQ_WORKER_METRICS_PORT:-9171}"
export INFERQ_LOG_LEVEL="${INFERQ_LOG_LEVEL:-WARNING}"
export INFERQ_MAX_QUEUE_DEPTH="${INFERQ_MAX_QUEUE_DEPTH:-5000}"  # 1,000 idle jobs must fit
export HF_HUB_OFFLINE=1
IQ="$ROOT/.venv/bin/inferq"

running() {  # a process this script started that is still alive
  for name in api worker echo; do
    if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

start() {
  mkdir -p "$RUN"
  # A second set would share db 5's queues with the first: two llama.cpp workers on two cores.
  if running; then
    echo "the bench stack is already running; bench/stack.sh stop first" >&2
    exit 1
  fi
  createdb -h 127.0.0.1 -U postgres "${INFERQ_DATABASE_URL##*/}" 2>/dev/null || true
  "$IQ" migrate
  if [ ! -s "$RUN/key" ]; then
    (umask 077; "$IQ" keys create --tenant bench --tier unlimited --scopes inference,admin,operator \
      | grep -E '^iq_' >"$RUN/key")
  fi
  "$IQ" worker --engine llamacpp --model gemma-3-270m >"$RUN/worker.log" 2>&1 &
  echo $! >"$RUN/worker.pid"
  INFERQ_ECHO_TOKEN_DELAY_S=60 INFERQ_WORKER_METRICS_PORT="${BENCH_ECHO_METRICS_PORT:-9181}" \
    "$IQ" worker --engine echo --model echo >"$RUN/echo.log" 2>&1 &
  echo $! >"$RUN/echo.pid"
  "$IQ" api >"$RUN/api.log" 2>&1 &
  echo $! >"$RUN/api.pid"
  for _ in $(seq 1 60); do
    curl -fs -o /dev/null "http://127.0.0.1:$INFERQ_API_PORT/health" && break
    sleep 1
  done
  echo "inferq bench stack on http://127.0.0.1:$INFERQ_API_PORT (logs in $RUN)"
}

stop() {
  for name in api worker echo; do
    [ -f "$RUN/$name.pid" ] && kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
  done
  # Celery's warm shutdown waits for the task in hand, and the echo worker's idle jobs take a
  # minute a token: a worker left behind would take the next stack's jobs. 15 s, then KILL.
  for name in api worker echo; do
    [ -f "$RUN/$name.pid" ] || continue
    pid="$(cat "$RUN/$name.pid")"
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
  done
}

env_exports() {
  echo "export INFERQ_API_PORT=$INFERQ_API_PORT INFERQ_REDIS_URL=$INFERQ_REDIS_URL"
  echo "export INFERQ_DATABASE_URL=$INFERQ_DATABASE_URL HF_HUB_OFFLINE=1"
  echo "export INFERQ_API_KEY=\$(cat $RUN/key)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_exports ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
