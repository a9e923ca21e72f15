"""Each worker serves its own Prometheus metrics, announced in its heartbeat.

The worker and its API run on a Redis db of their own (as in test_tracing), so no other test's
echo worker can take the job, and the metrics port is one no other test uses.
"""

from __future__ import annotations

import os
import time

import httpx
import redis

from tests.conftest import API_PORT, AUTH
from tests.stack import Proc, inferq_argv, wait_http, wait_workers

PORT = API_PORT + 5
METRICS_PORT = API_PORT + 60
REDIS_URL = os.environ.get("INFERQ_TEST_METRICS_REDIS_URL", "redis://127.0.0.1:6379/9")


def test_worker_exports_job_and_slot_metrics(stack: str) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "INFERQ_REDIS_URL": REDIS_URL,
        "INFERQ_API_PORT": str(PORT),
        "INFERQ_WORKER_METRICS_PORT": str(METRICS_PORT),
        "INFERQ_EMBEDDINGS_ENABLED": "false",
    }
    worker = Proc(
        "worker-metrics", inferq_argv("worker", "--engine", "echo", "--model", "echo"), env
    )
    api = Proc("api-metrics", inferq_argv("api"), env)
    try:
        wait_workers(REDIS_URL, {"echo"})
        base = f"http://127.0.0.1:{PORT}"
        wait_http(f"{base}/health", api)
        body = {
            "model": "echo",
            "prompt": "metrics please",
            "max_tokens": 3,
            "cache": {"mode": "off"},
        }
        job_id = httpx.post(f"{base}/v1/jobs", json=body, headers=AUTH).json()["id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/v1/jobs/{job_id}", headers=AUTH).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        workers = httpx.get(f"{base}/v1/workers", headers=AUTH).json()["data"]
        (echo,) = workers
        assert echo["metrics_port"] == METRICS_PORT
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        gauge = f'inferq_worker_slots{{state="total",worker="{echo["id"]}"}} 8.0'
        while gauge not in (text := httpx.get(url).text):  # set at the next heartbeat
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        api.stop()
        worker.stop()
    # prometheus_client writes labels in alphabetical order.
    assert 'inferq_job_outcomes_total{error_code="",model="echo",status="completed"} 1.0' in text
    assert 'inferq_generated_tokens_total{model="echo"} 3.0' in text
    assert 'inferq_ttft_seconds_count{model="echo"} 1.0' in text
