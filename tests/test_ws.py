"""The WebSocket chat protocol against the real stack (echo engine unless marked slow)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close

from tests.auth_helpers import create_key, create_tenant
from tests.conftest import API_KEY, API_PORT, AUTH, _pg_dsn, wait_final
from tests.stack import LOG_DIR, Proc, inferq_argv, wait_http
from tests.wschat import (
    chat,
    connect,
    recv,
    send,
    text_of,
    tokens_of,
    until_end,
    ws_url,
)

LONG = " ".join(f"t{i}" for i in range(200))


async def tests_key(scopes: tuple[str, ...] = ("inference",), **kwargs: Any) -> str:
    """A new key of the tests' tenant (written to PostgreSQL, as `inferq keys create` does)."""
    tenant_id, _ = await create_tenant(_pg_dsn(), "tests", "unlimited")
    return await create_key(_pg_dsn(), tenant_id, scopes, **kwargs)


async def closed_after(ws: ClientConnection, timeout: float = 10) -> tuple[list[Any], Close]:
    """The frames a socket still gets, and the close frame that ends it."""
    frames: list[Any] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(await recv(ws, timeout))
    assert closed.value.rcvd is not None, "the server sent no close frame"
    return frames, closed.value.rcvd


async def test_chat_streams_tokens_in_order_and_ends(stack: str) -> None:
    async with connect(ws_url(stack), subprotocols=["inferq.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "inferq.v1"
        start, frames = await chat(ws, "alpha beta", model="echo", params={"max_tokens": 5})
        job_id = start["job_id"]
        uuid.UUID(start["session_id"])
        seqs = [t["seq"] for t in tokens_of(frames, job_id)]
        assert seqs == [0, 1, 2, 3, 4]
        assert text_of(frames, job_id) == "user: alpha beta user: alpha"
        end = frames[-1]
        assert end["event"] == "stream_end"
        assert end["data"]["finish_reason"] == "length" and end["data"]["cache"] == "miss"
        assert end["data"]["usage"]["completion_tokens"] == 5
        assert set(end["data"]["timings"]) >= {"ttft_ms", "total_ms"}


async def test_bad_messages_get_error_events_and_socket_stays_open(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        cases = [
            ("{not json", "invalid_json"),
            (json.dumps([1, 2]), "invalid_message"),
            (json.dumps({"event": "teleport", "data": {}}), "unknown_event"),
            (json.dumps({"event": "stream_chat", "data": {"prompt": ""}}), "invalid_value"),
            (json.dumps({"event": "stream_chat", "data": "x"}), "invalid_message"),
            (json.dumps({"event": "stop", "data": {}}), "invalid_value"),
            ('{"event": "stream_chat", "data": {"prompt": "a\\ud800"}}', "invalid_json"),
            (json.dumps({"event": "stream_chat", "data": {"prompt": "a\x00"}}), "unstorable_value"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            frame = await recv(ws)
            assert frame == {"event": "error", "data": frame["data"]}
            assert frame["data"]["code"] == code, (raw, frame)
        await send(ws, "stream_chat", {"prompt": "hi", "model": "nope"})
        assert (await recv(ws))["data"]["code"] == "model_not_found"
        await send(ws, "stream_chat", {"prompt": "hi", "session_id": str(uuid.uuid4())})
        assert (await recv(ws))["data"]["code"] == "session_not_found"
        await send(ws, "stream_chat", {"prompt": "hi", "model": "echo", "params": {"top_k": 3}})
        unknown = (await recv(ws))["data"]
        assert unknown["code"] == "invalid_value" and unknown["param"] == "params.top_k"
        await send(
            ws, "stream_chat", {"prompt": "hi", "model": "echo", "params": {"max_tokens": 0}}
        )
        assert (await recv(ws))["data"]["code"] == "invalid_value"
        await send(ws, "resume", {"job_id": str(uuid.uuid4()), "last_seq": 0})
        missing = await recv(ws)
        assert missing["data"]["code"] == "job_not_found" and "job_id" in missing["data"]
        await send(ws, "ping")
        assert await recv(ws) == {"event": "pong", "data": {}}


async def test_message_over_64_kib_closes_with_1009(stack: str) -> None:
    async with connect(ws_url(stack), max_size=None) as ws:
        await ws.send(json.dumps({"event": "ping", "data": {"pad": "x" * 60_000}}))
        assert (await recv(ws))["event"] == "pong"  # under the limit: fine
        await ws.send(json.dumps({"event": "ping", "data": {"pad": "x" * 70_000}}))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_several_chats_at_once_on_one_socket(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        prompts = {f"p{i}": f"word{i}a word{i}b" for i in range(3)}
        for prompt in prompts.values():
            await send(
                ws, "stream_chat", {"prompt": prompt, "model": "echo", "params": {"max_tokens": 4}}
            )
        frames: list[dict[str, object]] = []
        ended: set[str] = set()
        async with asyncio.timeout(60):
            while len(ended) < 3:
                frame = await recv(ws)
                frames.append(frame)
                if frame["event"] == "stream_end":
                    ended.add(frame["data"]["job_id"])  # type: ignore[index]
        starts = [f["data"] for f in frames if f["event"] == "stream_start"]
        assert len({s["job_id"] for s in starts}) == 3  # type: ignore[index]
        texts = sorted(text_of(frames, job) for job in ended)  # type: ignore[arg-type]
        assert texts == sorted(f"user: {p} user:" for p in prompts.values())


async def test_stop_ends_generation_within_one_second(stack: str, db: asyncpg.Connection) -> None:
    async with connect(ws_url(stack)) as ws:
        await send(
            ws, "stream_chat", {"prompt": LONG, "model": "echo", "params": {"max_tokens": 200}}
        )
        job_id = (await recv(ws))["data"]["job_id"]
        for _ in range(3):
            assert (await recv(ws))["event"] == "stream_token"
        asked = time.monotonic()
        await send(ws, "stop", {"job_id": job_id})
        frames = await until_end(ws, job_id)
        took = time.monotonic() - asked
        assert frames[-1]["event"] == "stream_end", frames[-1]
        assert frames[-1]["data"]["finish_reason"] == "cancelled"
        assert took < 1.0, f"stop took {took:.3f} s"
        assert len(tokens_of(frames, job_id)) < 50
    row = await db.fetchrow(
        "SELECT content, status, finish_reason FROM chat_messages WHERE job_id = $1::uuid", job_id
    )
    assert row["status"] == "partial" and row["finish_reason"] == "cancelled"
    assert row["content"] and LONG.startswith(row["content"].removeprefix("user: "))


async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        await send(
            ws, "stream_chat", {"prompt": LONG, "model": "echo", "params": {"max_tokens": 40}}
        )
        job_id = (await recv(ws))["data"]["job_id"]
        head = [(await recv(ws))["data"] for _ in range(7)]
    last_seq = head[-1]["seq"]
    await asyncio.sleep(0.3)  # tokens go on while nobody listens
    async with connect(ws_url(stack)) as ws:
        await send(ws, "resume", {"job_id": job_id, "last_seq": last_seq})
        tail = await until_end(ws, job_id)
    tokens = head + tokens_of(tail, job_id)
    assert [t["seq"] for t in tokens] == list(range(40)), "no gap, no duplicate"
    assert "".join(t["token"] for t in tokens) == "user: " + " ".join(LONG.split()[:39])
    assert tail[-1]["data"]["seq"] == 40


async def test_resume_of_finished_job_replays_the_rest(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        start, _ = await chat(ws, "x y", model="echo", params={"max_tokens": 3})
        await send(ws, "resume", {"job_id": start["job_id"], "last_seq": 0})
        again = await until_end(ws, start["job_id"])
    assert [f["data"]["seq"] for f in again] == [1, 2, 3]
    assert again[-1]["event"] == "stream_end"


async def test_fifty_sockets_at_once_without_cross_talk(stack: str) -> None:
    async def one(i: int) -> tuple[str, str]:
        async with connect(ws_url(stack)) as ws:
            start, frames = await chat(ws, f"sock{i}", model="echo", params={"max_tokens": 3})
            others = [f for f in frames if f["data"].get("job_id") not in (start["job_id"], None)]
            assert not others, f"socket {i} got frames of other jobs: {others[:2]}"
            return f"sock{i}", text_of(frames, start["job_id"])

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), 180)
    for word, text in results:
        assert text == f"user: {word} user:", (word, text)


async def test_slow_reader_does_not_block_other_sockets(stack: str) -> None:
    async with connect(ws_url(stack), max_queue=1) as stalled:
        await send(
            stalled, "stream_chat", {"prompt": LONG, "model": "echo", "params": {"max_tokens": 150}}
        )
        # `stalled` never reads from here on; another socket must still stream at full pace.
        async with connect(ws_url(stack)) as ws:
            started = time.monotonic()
            start, frames = await chat(ws, "quick one", model="echo", params={"max_tokens": 3})
            assert text_of(frames, start["job_id"]) == "user: quick one"
        # The echo worker is busy with the stalled chat (150 x 30 ms) before ours.
        assert time.monotonic() - started < 30


async def test_reply_is_stored_when_nobody_listens(stack: str, db: asyncpg.Connection) -> None:
    async with connect(ws_url(stack)) as ws:
        await send(
            ws,
            "stream_chat",
            {"prompt": "gone away", "model": "echo", "params": {"max_tokens": 10}},
        )
        job_id = (await recv(ws))["data"]["job_id"]
    async with httpx.AsyncClient(base_url=stack, headers=AUTH) as client:
        job = await wait_final(client, job_id)
    await asyncio.sleep(0.1)
    row = await db.fetchrow(
        "SELECT content, status, tokens FROM chat_messages WHERE job_id = $1::uuid", job_id
    )
    assert row["status"] == "complete" and row["content"] == job["output"]
    assert row["tokens"] == 10


async def test_credentials_are_never_logged(stack: str) -> None:
    secret = f"iq_{uuid.uuid4().hex[:12]}_{'x' * 43}"  # well-formed, unknown: refused
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(stack), additional_headers={"Authorization": f"Bearer {secret}"}):
            pass
    protocols = ["inferq.v1", f"bearer.{API_KEY}"]
    async with connect(ws_url(stack), additional_headers={}, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "inferq.v1"  # the token is never echoed back
        await send(ws, "auth", {"token": API_KEY})
        assert (await recv(ws))["event"] == "authenticated"
        await send(ws, "auth", {"token": 5})
        assert (await recv(ws))["data"]["code"] == "invalid_value"
        await chat(ws, "log me not", model="echo", params={"max_tokens": 2})
    await asyncio.sleep(0.5)
    logs = "".join(p.read_text(errors="replace") for p in LOG_DIR.glob("*.log"))
    assert secret not in logs and API_KEY not in logs


JWT_SECRET = "ws-test-secret-0123456789abcdef0123456789"
IDLE_TIMEOUT_S = 1.2


@pytest.fixture(scope="module")
def tuned_api(stack: str) -> Iterator[str]:
    """A second API on the same stack: quick pings and idle timeout, HS256 JWTs, no leeway."""
    port = API_PORT + 1
    env = {
        "INFERQ_API_PORT": str(port),
        "INFERQ_WS_PING_INTERVAL_S": "0.3",
        "INFERQ_WS_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        "INFERQ_JWT_ALGORITHM": "HS256",
        "INFERQ_JWT_SECRET": JWT_SECRET,
        "INFERQ_JWT_LEEWAY_S": "0",
    }
    proc = Proc("api-ws-tuned", inferq_argv("api"), env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def test_idle_socket_gets_pings_and_is_closed_after_the_timeout(tuned_api: str) -> None:
    base = tuned_api
    async with connect(ws_url(base)) as alive, connect(ws_url(base)) as silent:
        pings = 0
        async with asyncio.timeout(10):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # answers each ping: kept open
                frame = await recv(alive)
                assert frame["event"] == "ping"
                pings += 1
                await send(alive, "pong")
        assert pings >= 3
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # never answered: closed after the idle timeout
                await recv(silent, timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "idle timeout"
        await send(alive, "ping")
        assert (await recv(alive))["event"] in ("pong", "ping")


async def test_terminal_chat_client(stack: str) -> None:
    script = "hello from the terminal\n/stop\n/new\nsecond session here <end>\n"
    proc = await asyncio.create_subprocess_exec(
        *inferq_argv("chat", "--url", ws_url(stack), "--model", "echo", "--max-tokens", "300"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "INFERQ_API_KEY": API_KEY},
    )
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert text.startswith("[session ") and "\nuser:" in text, text
    assert "finish: cancelled" in text, text  # /stop stopped the 300-token reply
    assert "user: second session here\n[finish: stop" in text, text
    sessions = [
        line.split()[1].rstrip("]") for line in text.splitlines() if line.startswith("[session ")
    ]
    assert len(sessions) == 2 and sessions[0] != sessions[1], text


class _StalledSocket:
    """A peer that never reads: the first send blocks for good (a full TCP window)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self._never = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        await self._never.wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_outbox_is_bounded_and_closes_a_stalled_reader_with_1013() -> None:
    from inferq.api.ws import CLOSE_TRY_AGAIN, Outbox

    peer = _StalledSocket()
    outbox = Outbox(peer, limit=4)  # type: ignore[arg-type]
    writer = asyncio.create_task(outbox.run())
    outbox.send("stream_token", {"seq": 0})
    await asyncio.sleep(0.01)  # the writer takes it and blocks on the peer
    for seq in range(1, 5):
        outbox.send("stream_token", {"seq": seq})
    assert len(outbox) == 4 and outbox.closing is None
    outbox.send("stream_token", {"seq": 5})  # one too many
    assert outbox.closing is not None and outbox.closing[0] == CLOSE_TRY_AGAIN
    for seq in range(6, 10_000):
        outbox.send("stream_token", {"seq": seq})
    assert len(outbox) == 0, "nothing piles up once closing"
    assert outbox.close_requested.is_set() and len(peer.sent) == 1
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer


async def test_refusals_send_their_error_frame_before_the_1008_close(stack: str) -> None:
    async with connect(ws_url(stack), additional_headers={}) as ws:  # no credential
        await send(ws, "stream_chat", {"prompt": "x"})
        frames, close = await closed_after(ws)
    assert [f["data"]["code"] for f in frames] == ["unauthorized"]
    assert (close.code, close.reason) == (1008, "authentication required")

    async with connect(ws_url(stack), additional_headers={}) as ws:
        await send(ws, "auth", {"token": "garbage"})
        frames, close = await closed_after(ws)
    assert [f["data"]["code"] for f in frames] == ["invalid_api_key"]
    assert (close.code, close.reason) == (1008, "invalid credentials")

    admin_only = await tests_key(("admin",))  # valid, but not for inference
    async with connect(ws_url(stack), additional_headers={}) as ws:
        await send(ws, "auth", {"token": admin_only})
        frames, close = await closed_after(ws)
    assert [f["data"]["code"] for f in frames] == ["insufficient_scope"]
    assert "inference" in frames[0]["data"]["message"]
    assert (close.code, close.reason) == (1008, "insufficient scope")


async def test_handshake_reads_the_credential_as_rest_does(stack: str) -> None:
    for headers in ({"Authorization": f"bearer {API_KEY}"}, {"x-api-key": API_KEY}):
        async with connect(ws_url(stack), additional_headers=headers) as ws:
            _, frames = await chat(ws, "any case", model="echo", params={"max_tokens": 2})
            assert frames[-1]["event"] == "stream_end", (headers.keys(), frames[-1])
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(stack), additional_headers={"Authorization": f"Basic {API_KEY}"}):
            pass
    assert refused.value.response.status_code == 403


async def refused_and_closed(ws: ClientConnection, code: str) -> None:
    frames, close = await closed_after(ws)
    assert [f["data"]["code"] for f in frames if f["event"] == "error"] == [code], frames
    assert not [f for f in frames if f["event"] == "stream_start"], frames
    assert (close.code, close.reason) == (1008, code)


async def test_revoked_key_stops_working_on_an_open_socket(client: httpx.AsyncClient) -> None:
    made = await client.post("/v1/admin/keys", json={"scopes": ["inference"]})
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    url = ws_url(str(client.base_url).rstrip("/"))
    async with (
        connect(url, additional_headers=key) as chatting,
        connect(url, additional_headers=key) as resuming,
        connect(url, additional_headers=key) as stopping,
    ):
        start, _ = await chat(chatting, "before", model="echo", params={"max_tokens": 2})
        revoked = await client.delete(f"/v1/admin/keys/{made.json()['id']}")
        assert revoked.status_code == 204
        await send(chatting, "stream_chat", {"prompt": "after", "model": "echo"})
        await refused_and_closed(chatting, "revoked_api_key")
        await send(resuming, "resume", {"job_id": start["job_id"], "last_seq": -1})
        await refused_and_closed(resuming, "revoked_api_key")
        await send(stopping, "stop", {"job_id": start["job_id"]})
        await refused_and_closed(stopping, "revoked_api_key")


async def test_expired_key_stops_working_on_an_open_socket(stack: str) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=1.5)
    key = await tests_key(expires_at=expires_at)
    async with connect(ws_url(stack), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await chat(ws, "before", model="echo", params={"max_tokens": 1})
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)
        await send(ws, "stream_chat", {"prompt": "after", "model": "echo"})
        await refused_and_closed(ws, "expired_api_key")


async def test_jwt_past_its_exp_stops_working_on_an_open_socket(tuned_api: str) -> None:
    exp = time.time() + 2
    claims = {"tenant": "tests", "aud": "inferq", "scope": "inference", "exp": int(exp) + 1}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    bearer = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url(tuned_api), additional_headers=bearer) as ws:
        await chat(ws, "before", model="echo", params={"max_tokens": 1})
        while time.time() < claims["exp"] + 0.3:  # keep the socket busy past the idle timeout
            await send(ws, "ping")
            assert (await recv(ws))["event"] in ("pong", "ping")
            await asyncio.sleep(0.2)
        await send(ws, "stream_chat", {"prompt": "after", "model": "echo"})
        await refused_and_closed(ws, "invalid_token")


async def test_request_id_is_echoed_in_every_reply_to_its_message(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        for i in range(6):
            await send(
                ws,
                "stream_chat",
                {"prompt": f"order {i}", "model": "echo", "params": {"max_tokens": 3},
                 "request_id": f"r{i}"},
            )  # fmt: skip
        await send(ws, "stream_chat", {"prompt": "x", "model": "nope", "request_id": "no-model"})
        await send(ws, "stream_chat", {"prompt": "", "request_id": "no-prompt"})
        await send(ws, "stream_chat", {"prompt": "x", "request_id": "not valid!"})
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while sum(f["event"] in ("stream_end", "error") for f in frames) < 9:
                frames.append(await recv(ws))
        starts = {
            f["data"]["request_id"]: f["data"] for f in frames if f["event"] == "stream_start"
        }
        assert sorted(starts) == [f"r{i}" for i in range(6)]
        for i in range(6):
            job_id = starts[f"r{i}"]["job_id"]
            assert text_of(frames, job_id) == f"user: order {i}", (i, text_of(frames, job_id))
            (end,) = [
                f for f in frames if f["event"] == "stream_end" and f["data"]["job_id"] == job_id
            ]
            assert end["data"]["request_id"] == f"r{i}"
        assert all("request_id" not in f["data"] for f in frames if f["event"] == "stream_token")
        errors = {f["data"].get("request_id"): f["data"] for f in frames if f["event"] == "error"}
        assert errors["no-model"]["code"] == "model_not_found"
        assert errors["no-prompt"]["code"] == "invalid_value"
        assert errors["no-prompt"]["param"] == "prompt"
        assert errors[None]["code"] == "invalid_value" and errors[None]["param"] == "request_id"

        await send(
            ws, "resume", {"job_id": starts["r0"]["job_id"], "last_seq": 1, "request_id": "again"}
        )
        replay = await until_end(ws, starts["r0"]["job_id"])
        assert replay[-1]["event"] == "stream_end" and replay[-1]["data"]["request_id"] == "again"
        missing = str(uuid.uuid4())
        await send(ws, "stop", {"job_id": missing, "request_id": "stop-1"})
        await send(ws, "resume", {"job_id": missing, "request_id": "resume-1"})
        answers = [(await recv(ws))["data"] for _ in range(2)]
        assert sorted((a["request_id"], a["code"]) for a in answers) == [
            ("resume-1", "job_not_found"),
            ("stop-1", "job_not_found"),
        ]


async def test_resume_at_or_past_the_end_still_ends_with_a_final_frame(stack: str) -> None:
    async with connect(ws_url(stack)) as ws:
        start, frames = await chat(ws, "x y", model="echo", params={"max_tokens": 3})
        job_id, last = start["job_id"], frames[-1]["data"]["seq"]
        assert last == 3
        await send(ws, "resume", {"job_id": job_id, "last_seq": last, "request_id": "at-end"})
        again = await recv(ws, timeout=5)
        assert again["event"] == "stream_end", again
        assert again["data"]["seq"] == last and again["data"]["request_id"] == "at-end"
        assert again["data"]["finish_reason"] == "length"
        await send(ws, "resume", {"job_id": job_id, "last_seq": 1000, "request_id": "past"})
        past = await recv(ws, timeout=5)
        assert past["event"] == "error", past
        assert past["data"]["code"] == "invalid_value" and past["data"]["param"] == "last_seq"
        assert "1000" in past["data"]["message"] and past["data"]["job_id"] == job_id
        assert past["data"]["request_id"] == "past"


async def test_idle_clock_starts_when_a_long_chat_ends(tuned_api: str) -> None:
    async with connect(ws_url(tuned_api)) as ws:  # a client that only listens
        await send(
            ws, "stream_chat", {"prompt": LONG, "model": "echo", "params": {"max_tokens": 60}}
        )
        started = time.monotonic()
        while (frame := await recv(ws))["event"] != "stream_end":
            assert frame["event"] in ("stream_start", "stream_token", "ping"), frame
        ended = time.monotonic()
        assert ended - started > IDLE_TIMEOUT_S, "the reply must outlast the idle timeout"
        _, close = await closed_after(ws)  # the server's pings go unanswered
        lasted = time.monotonic() - ended
    assert close.reason == "idle timeout"
    assert lasted >= IDLE_TIMEOUT_S * 0.8, f"closed {lasted:.2f} s after the reply ended"


async def test_stop_requests_in_flight_are_bounded_per_socket(stack: str) -> None:
    from inferq.api.ws import MAX_PENDING_STOPS

    burst = 200
    async with connect(ws_url(stack)) as ws:
        missing = str(uuid.uuid4())
        await asyncio.gather(
            *(send(ws, "stop", {"job_id": missing, "request_id": f"s{i}"}) for i in range(burst))
        )
        answers = [(await recv(ws))["data"] for _ in range(burst)]
        assert sorted(a["request_id"] for a in answers) == sorted(f"s{i}" for i in range(burst))
        codes = [a["code"] for a in answers]
        assert set(codes) == {"job_not_found", "too_many_requests"}, set(codes)
        assert codes.count("job_not_found") >= MAX_PENDING_STOPS
        await send(ws, "ping")  # the socket still serves
        assert (await recv(ws))["event"] == "pong"


async def test_rate_limit_error_carries_its_retry_after_delay(stack: str) -> None:
    key = await tests_key(limits=(2, None, None))  # 2 requests a minute
    async with connect(ws_url(stack), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        for _ in range(2):
            await chat(ws, "within the limit", model="echo", params={"max_tokens": 1})
        await send(
            ws, "stream_chat", {"prompt": "one too many", "model": "echo", "request_id": "r3"}
        )
        refused = (await recv(ws))["data"]
    assert refused["code"] == "rate_limit_exceeded" and refused["request_id"] == "r3"
    assert isinstance(refused["retry_after_s"], int) and 1 <= refused["retry_after_s"] <= 60
    assert "Retry-After" not in refused["message"]
    assert f"retry after {refused['retry_after_s']} s" in refused["message"], refused["message"]
