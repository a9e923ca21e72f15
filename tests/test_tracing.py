"""One trace crosses the queue: API request → enqueue → Celery task → engine generation.

The API and a worker run as real processes exporting OTLP/HTTP to a receiver in this test,
on a Redis db of their own so that no untraced worker can take the job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import API_PORT, AUTH
from tests.stack import Proc, inferq_argv, wait_http, wait_workers

PORT = API_PORT + 4
REDIS_URL = os.environ.get("INFERQ_TEST_TRACE_REDIS_URL", "redis://127.0.0.1:6379/2")


class Receiver(ThreadingHTTPServer):
    spans: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")  # fmt: skip
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    self.server.spans.append({
                        "service": service, "name": span.name, "trace": span.trace_id.hex(),
                        "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "attributes": attributes,
                    })  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_trace_crosses_the_queue(stack: str, receiver: Receiver) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "INFERQ_REDIS_URL": REDIS_URL,
        "INFERQ_API_PORT": str(PORT),
        "INFERQ_EMBEDDINGS_ENABLED": "false",
    }
    worker = Proc(
        "worker-traced", inferq_argv("worker", "--engine", "echo", "--model", "echo"), env
    )
    api = Proc("api-traced", inferq_argv("api"), env)
    try:
        wait_workers(REDIS_URL, {"echo"})
        wait_http(f"http://127.0.0.1:{PORT}/health", api)
        body = {"model": "echo", "prompt": "trace me", "max_tokens": 2}
        response = httpx.post(f"http://127.0.0.1:{PORT}/v1/jobs", json=body, headers=AUTH)
        assert response.status_code == 202, response.text
        job = response.json()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _names(receiver) >= EXPECTED:
            time.sleep(0.2)
    finally:
        api.stop()
        worker.stop()
    spans = {s["name"]: s for s in receiver.spans if _job_of(s) in (job["id"], None)}
    assert _names(receiver) >= EXPECTED, _names(receiver)
    request = spans["HTTP POST /v1/jobs"]
    enqueue, task, generate = spans["enqueue"], spans["celery.run_job"], spans["engine.generate"]
    assert {s["trace"] for s in (request, enqueue, task, generate)} == {request["trace"]}
    # FastAPI adds spans of its own between the request and the enqueue.
    assert request["id"] in _ancestors(enqueue, receiver.spans)
    assert task["parent"] == enqueue["id"] and generate["parent"] == task["id"]
    assert (request["service"], task["service"]) == ("inferq-api", "inferq-worker")
    assert generate["attributes"]["inferq.completion_tokens"].int_value == 2


EXPECTED = {"HTTP POST /v1/jobs", "enqueue", "celery.run_job", "engine.generate"}


def _names(receiver: Receiver) -> set[str]:
    return {s["name"] for s in receiver.spans}


def _job_of(span: dict[str, Any]) -> str | None:
    value = span["attributes"].get("inferq.job_id")
    return value.string_value if value is not None else None


def _ancestors(span: dict[str, Any], spans: list[dict[str, Any]]) -> set[str]:
    by_id = {s["id"]: s for s in spans}
    found: set[str] = set()
    while span["parent"] in by_id and span["parent"] not in found:
        found.add(span["parent"])
        span = by_id[span["parent"]]
    return found
