"""Webhooks: Standard Webhooks signatures; outbound delivery to a real local receiver, with a
retry after a failure and a record of each try; inbound signed submissions with clock-skew
and replay protection."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest

from inferq.auth import signing
from inferq.auth.webhook_targets import WebhookTargetRefused, check_webhook_url
from tests.auth_helpers import bearer, create_key, create_tenant
from tests.conftest import API_PORT, AUTH, _pg_dsn, wait_final
from tests.stack import Proc, inferq_argv, wait_http


class Receiver:
    """A webhook receiver on loopback: answers with `codes` in turn, then 200."""

    def __init__(self, codes: list[int]):
        self.codes = codes
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])
    yield r
    r.close()


def test_signatures_round_trip_and_fail_when_anything_changes() -> None:
    secret, other = signing.new_secret(), signing.new_secret()
    body = b'{"a":1}'
    headers = signing.signed_headers(secret, "msg_1", body)
    assert signing.verify(secret, headers, body, 300) == "msg_1"
    for bad_secret, bad_body, changes in [
        (other, body, {}),
        (secret, b'{"a":2}', {}),
        (secret, body, {"webhook-id": "msg_2"}),
        (secret, body, {"webhook-signature": "v1,AAAA"}),
        (secret, body, {"webhook-timestamp": str(int(time.time()) - 301)}),
        (secret, body, {"webhook-timestamp": str(int(time.time()) + 301)}),
        (secret, body, {"webhook-signature": ""}),
    ]:
        with pytest.raises(signing.BadSignature):
            signing.verify(bad_secret, {**headers, **changes}, bad_body, 300)
    rotated = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    assert signing.verify(secret, rotated, body, 300) == "msg_1"  # any one signature may match


async def test_a_finished_job_is_posted_signed_retried_and_recorded(
    stack: str, receiver: Receiver
) -> None:
    tenant_id, secret = await create_tenant(_pg_dsn(), f"hook-{uuid.uuid4().hex[:8]}")
    key = await create_key(_pg_dsn(), tenant_id)
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
        body = {"model": "echo", "prompt": "ring", "max_tokens": 3, "webhook_url": receiver.url}
        job_id = (await c.post("/v1/jobs", json=body)).json()["id"]
        job = await wait_final(c, job_id)
        async with asyncio.timeout(30):
            while len(receiver.received) < 2:  # the first try got a 500: retried after ~1 s
                await asyncio.sleep(0.1)
        assert (await c.get("/v1/admin/tenant")).json()["webhook_secret"] == secret
        async with asyncio.timeout(10):
            while True:
                deliveries = (
                    await c.get("/v1/admin/webhooks/deliveries", params={"job_id": job_id})
                ).json()["data"]
                if deliveries and deliveries[0]["status"] == "delivered":
                    break
                await asyncio.sleep(0.1)
    (h1, _), (h2, b2) = receiver.received
    assert h1["webhook-id"] == h2["webhook-id"] == deliveries[0]["id"]  # one message, two tries
    for headers, raw in receiver.received:
        assert signing.verify(secret, headers, raw, 300) == headers["webhook-id"]
    payload = json.loads(b2)
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
    assert payload["data"]["output"] == job["output"]
    assert len(deliveries) == 1 and deliveries[0]["attempts"] == 2
    assert [t["status_code"] for t in deliveries[0]["log"]] == [500, 200]


def _signed(secret: str, body: bytes, **changes: str) -> dict[str, str]:
    headers = signing.signed_headers(secret, f"msg_{uuid.uuid4().hex}", body)
    headers.update(changes)
    if "webhook-timestamp" in changes:  # a sender with a skewed clock signs its own time
        ts = int(changes["webhook-timestamp"])
        headers["webhook-signature"] = signing.sign(secret, headers["webhook-id"], ts, body)
    return headers


async def test_inbound_webhooks_submit_once_and_refuse_forgeries(stack: str) -> None:
    name = f"ingest-{uuid.uuid4().hex[:8]}"
    tenant_id, secret = await create_tenant(_pg_dsn(), name)
    key = await create_key(_pg_dsn(), tenant_id)
    body = json.dumps({"model": "echo", "prompt": "from a webhook", "max_tokens": 2}).encode()
    url = f"/v1/webhooks/ingest?tenant={name}"
    async with httpx.AsyncClient(base_url=stack, timeout=60) as c:
        headers = _signed(secret, body)
        ok = await c.post(url, content=body, headers=headers)
        assert ok.status_code == 202, ok.text
        replay = await c.post(url, content=body, headers=headers)
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "webhook_replayed"
        now = int(time.time())
        for bad in (
            _signed(signing.new_secret(), body),  # another secret
            {**_signed(secret, body), "webhook-signature": "v1,AAAA"},
            _signed(secret, body, **{"webhook-timestamp": str(now - 301)}),  # too old
            _signed(secret, body, **{"webhook-timestamp": str(now + 301)}),  # from the future
            {k: v for k, v in _signed(secret, body).items() if k != "webhook-signature"},
        ):
            response = await c.post(url, content=body, headers=bad)
            assert response.status_code == 401, response.text
        tampered = await c.post(url, content=body + b" ", headers=_signed(secret, body))
        assert tampered.status_code == 401
        unknown = await c.post(
            "/v1/webhooks/ingest?tenant=nobody", content=body, headers=_signed(secret, body)
        )
        assert unknown.status_code == 401
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=30) as c:
        job = await wait_final(c, ok.json()["id"])
        assert job["status"] == "completed"
        listed = (await c.get("/v1/jobs")).json()["data"]
    assert [j["id"] for j in listed] == [ok.json()["id"]]  # processed once, as this tenant


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[::1]:9000/hook",
        "http://0.0.0.0/hook",
        "https://no-such-host.invalid/hook",
    ],
)
async def test_webhook_urls_on_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetRefused) as refused:
        await check_webhook_url(url, allow_private=False)
    assert refused.value.status_code == 422 and refused.value.param == "webhook_url"
    await check_webhook_url(url, allow_private=True)  # the operator's explicit choice


async def test_webhook_urls_on_public_addresses_pass() -> None:
    for url in ("http://93.184.216.34/hook", "https://[2606:4700:4700::1111]:8443/h"):
        await check_webhook_url(url, allow_private=False)


async def test_the_api_refuses_a_private_webhook_url_and_enqueues_nothing(
    stack: str, db: asyncpg.Connection
) -> None:
    port = API_PORT + 1
    env = {"INFERQ_API_PORT": str(port), "INFERQ_WEBHOOK_ALLOW_PRIVATE": "false"}
    api = Proc("api-ssrf", inferq_argv("api"), env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", api)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as c:
            body = {"model": "echo", "prompt": "x", "max_tokens": 2,
                    "webhook_url": "http://169.254.169.254/latest/meta-data/"}  # fmt: skip
            response = await c.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "webhook_url_refused" and error["param"] == "webhook_url"
        stored = "SELECT count(*) FROM jobs WHERE webhook_url = $1"
        assert await db.fetchval(stored, body["webhook_url"]) == 0
    finally:
        api.stop()


async def _listeners(db: asyncpg.Connection) -> set[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = 'LISTEN \"inferq_webhooks\"'"
    )
    return {row["pid"] for row in rows}


async def test_the_deliverer_wakes_on_notify_and_listens_again_after_losing_its_connection(
    stack: str,
) -> None:
    """Idle, the loop sleeps up to 30 s: a delivery within 10 s came from the trigger's
    NOTIFY. After its LISTEN connection is killed it connects again and still delivers."""
    db = await asyncpg.connect(_pg_dsn())
    receiver = Receiver([])
    try:
        async with asyncio.timeout(10):
            while not (before := await _listeners(db)):
                await asyncio.sleep(0.1)
        await db.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", before)
        async with asyncio.timeout(15):
            while not (await _listeners(db)) - before:
                await asyncio.sleep(0.1)
        tenant_id, _ = await create_tenant(_pg_dsn(), f"notify-{uuid.uuid4().hex[:8]}")
        key = await create_key(_pg_dsn(), tenant_id)
        async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
            await asyncio.sleep(1.0)  # past the reconnect's own claim: the loop is idle now
            body = {"model": "echo", "prompt": "wake", "max_tokens": 2, "webhook_url": receiver.url}
            job_id = (await c.post("/v1/jobs", json=body)).json()["id"]
            await wait_final(c, job_id)
            ended = time.monotonic()
            async with asyncio.timeout(10):
                while not receiver.received:
                    await asyncio.sleep(0.05)
        assert time.monotonic() - ended < 10
        assert json.loads(receiver.received[0][1])["data"]["id"] == job_id
    finally:
        receiver.close()
        await db.close()
