"""REST sessions, full-text search, export, the reply trigger and the analyst views."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.conftest import wait_final
from tests.wschat import chat, connect, recv, send, until_end, ws_url


async def new_session(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_create_read_patch_delete(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    created = await new_session(client, title="Trip", system_prompt="be brief", model="echo")
    assert created["object"] == "chat.session" and created["model"] == "echo"
    sid = created["id"]
    read = (await client.get(f"/v1/sessions/{sid}")).json()
    assert read["messages"] == [] and read["title"] == "Trip" and read["next_after"] is None
    patched = await client.patch(
        f"/v1/sessions/{sid}", json={"title": "Trip 2", "model": "gemma-3-270m"}
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "Trip 2" and patched.json()["model"] == "gemma-3-270m"
    assert patched.json()["system_prompt"] == "be brief"  # untouched
    cleared = (await client.patch(f"/v1/sessions/{sid}", json={"system_prompt": None})).json()
    assert cleared["system_prompt"] is None and cleared["title"] == "Trip 2"
    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
    assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 404
    assert (
        await db.fetchval("SELECT count(*) FROM chat_messages WHERE session_id = $1::uuid", sid)
        == 0
    )


async def test_bad_input_gets_openai_errors(client: httpx.AsyncClient) -> None:
    cases = [
        ("post", "/v1/sessions", {"model": "nope"}, 404, "model_not_found"),
        ("post", "/v1/sessions", {"colour": "red"}, 422, "invalid_value"),
        ("post", "/v1/sessions", {"title": "x" * 201}, 422, "invalid_value"),
        ("get", "/v1/sessions/not-a-uuid", None, 404, "session_not_found"),
        ("get", f"/v1/sessions/{uuid.uuid4()}", None, 404, "session_not_found"),
        ("patch", f"/v1/sessions/{uuid.uuid4()}", {"title": "t"}, 404, "session_not_found"),
        ("get", "/v1/sessions?cursor=garbage", None, 400, "invalid_cursor"),
        ("get", "/v1/sessions?limit=0", None, 422, "invalid_value"),
        ("get", "/v1/sessions/search?q=", None, 422, "invalid_value"),
        ("get", "/v1/sessions/search?q=x&offset=10001", None, 422, "invalid_value"),
    ]
    for method, path, body, status, code in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["message"] and "type" in error, (path, error)
    created = await new_session(client)
    response = await client.patch(f"/v1/sessions/{created['id']}", json={"model": None})
    assert response.status_code == 400
    # Positions are int32 in PostgreSQL: a larger `after` is refused as a value, naming it.
    for after in (2**31, 10**30, -2):
        response = await client.get(f"/v1/sessions/{created['id']}", params={"after": after})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_value"
        assert response.json()["error"]["param"] == "after", response.text
    largest = await client.get(f"/v1/sessions/{created['id']}", params={"after": 2**31 - 1})
    assert largest.status_code == 200 and largest.json()["messages"] == []


async def test_list_is_paginated_and_filtered(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [(await new_session(client, model="echo", title=f"page {i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {
            "limit": 2,
            "model": "echo",
            "created_after": before.isoformat(),
        }
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/sessions", params=params)).json()
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "newest first, each once"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = (await client.get("/v1/sessions", params={"created_after": future})).json()
    assert none["data"] == []
    past = (
        await client.get(
            "/v1/sessions", params={"created_before": before.isoformat(), "limit": 100}
        )
    ).json()
    assert not set(ids) & {s["id"] for s in past["data"]}
    other = (
        await client.get("/v1/sessions", params={"model": "gemma-3-270m", "limit": 100})
    ).json()
    assert not set(ids) & {s["id"] for s in other["data"]}


async def test_turns_are_stored_and_messages_paginated(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    session = await new_session(client, model="echo", system_prompt="sys words")
    async with connect(ws_url(stack)) as ws:
        for i in range(3):
            await chat(ws, f"turn{i}", session_id=session["id"], params={"max_tokens": 30})
    first = (await client.get(f"/v1/sessions/{session['id']}", params={"limit": 4})).json()
    assert [m["position"] for m in first["messages"]] == [0, 1, 2, 3]
    assert first["next_after"] == 3 and first["message_count"] == 6
    rest = (await client.get(f"/v1/sessions/{session['id']}", params={"after": 3})).json()
    assert [m["role"] for m in rest["messages"]] == ["user", "assistant"]
    assert rest["next_after"] is None
    last = rest["messages"][-1]
    assert last["status"] == "complete" and last["model"] == "echo" and last["job_id"]
    # The third turn saw the system prompt and both earlier turns (echo repeats its prompt).
    assert last["content"].startswith("system: sys words user: turn0 assistant: system:")
    prompt = await db.fetchval("SELECT prompt FROM jobs WHERE id = $1::uuid", last["job_id"])
    assert prompt.endswith("user: turn2") and "user: turn1" in prompt
    assert first["title"] == "turn0"


async def test_full_text_search(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    word = f"zebra{uuid.uuid4().hex[:8]}"
    session = await new_session(client, model="echo")
    async with connect(ws_url(stack)) as ws:
        await chat(
            ws, f"the {word} crossed rivers", session_id=session["id"], params={"max_tokens": 6}
        )
        await chat(ws, "nothing to see", session_id=session["id"], params={"max_tokens": 3})
    found = (await client.get("/v1/sessions/search", params={"q": f"{word} river"})).json()
    assert found["data"], found
    assert {h["session_id"] for h in found["data"]} == {session["id"]}
    assert {h["role"] for h in found["data"]} == {"user", "assistant"}  # stemmed: river(s)
    assert all(f"<b>{word}</b>" in h["snippet"] for h in found["data"])
    query = f'"{word} crossed" -rivers'  # a phrase, and a word that must not be there
    missing = (await client.get("/v1/sessions/search", params={"q": query})).json()
    assert missing["data"] == []
    one = (await client.get("/v1/sessions/search", params={"q": word, "limit": 1})).json()
    assert len(one["data"]) == 1 and one["next_offset"] == 1
    # The GIN index serves the query (forced, since the test table is small).
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await db.fetch(
                "EXPLAIN SELECT id FROM chat_messages "
                "WHERE content_tsv @@ websearch_to_tsquery('english', $1)",
                word,
            )
        )
    assert "ix_chat_messages_content_tsv" in plan, plan


async def test_export_is_a_json_download(stack: str, client: httpx.AsyncClient) -> None:
    session = await new_session(client, model="echo", title="export me")
    async with connect(ws_url(stack)) as ws:
        await chat(ws, "export this", session_id=session["id"], params={"max_tokens": 3})
    response = await client.get(f"/v1/sessions/{session['id']}/export")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    document = response.json()
    assert document["object"] == "chat.session.export"
    assert document["session"]["title"] == "export me"
    assert [m["content"] for m in document["messages"]] == [
        "export this",
        "user: export this",
    ]


async def test_analyst_views(stack: str, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    session = await new_session(client, model="echo")
    async with connect(ws_url(stack)) as ws:
        await chat(ws, "count me", session_id=session["id"], params={"max_tokens": 4})
        await chat(ws, "and me", session_id=session["id"], params={"max_tokens": 2})
    stats = await db.fetchrow(
        "SELECT * FROM chat_session_stats WHERE session_id = $1::uuid", session["id"]
    )
    assert (
        stats["messages"] == 4 and stats["user_messages"] == 2 and stats["assistant_messages"] == 2
    )
    assert stats["completion_tokens"] == 6 and stats["prompt_tokens"] > 0
    assert stats["avg_ttft_ms"] > 0 and stats["models"] == ["echo"]
    assert stats["cache_hits"] == 0 and stats["truncated_turns"] == 0
    turns = await db.fetch(
        "SELECT * FROM chat_turns WHERE session_id = $1::uuid ORDER BY position", session["id"]
    )
    assert [t["completion_tokens"] for t in turns] == [4, 2]
    assert all(t["total_ms"] >= t["ttft_ms"] for t in turns)
    daily = await db.fetchrow(
        "SELECT * FROM chat_daily_usage WHERE model = 'echo' ORDER BY day DESC LIMIT 1"
    )
    assert daily["turns"] >= 2 and daily["p50_ttft_ms"] > 0

    # The same first turn in a new session is answered by the exact cache, and counted.
    again = await new_session(client, model="echo")
    async with connect(ws_url(stack)) as ws:
        await chat(ws, "count me", session_id=again["id"], params={"max_tokens": 4})
    hit = await db.fetchrow("SELECT * FROM chat_turns WHERE session_id = $1::uuid", again["id"])
    assert (hit["cache"], hit["cache_layer"]) == ("hit", "exact")
    assert [(t["cache"], t["cache_layer"]) for t in turns] == [("miss", None)] * 2
    stats = await db.fetchrow(
        "SELECT * FROM chat_session_stats WHERE session_id = $1::uuid", again["id"]
    )
    assert stats["cache_hits"] == 1
    hits_today = await db.fetchval(
        "SELECT cache_hits FROM chat_daily_usage WHERE model = 'echo' ORDER BY day DESC LIMIT 1"
    )
    assert hits_today >= 1


async def test_pending_reply_shows_live_text(stack: str, client: httpx.AsyncClient) -> None:
    session = await new_session(client, model="echo")
    long = " ".join(f"w{i}" for i in range(100))
    async with connect(ws_url(stack)) as ws:
        data = {"session_id": session["id"], "prompt": long, "params": {"max_tokens": 100}}
        await send(ws, "stream_chat", data)
        start = await recv(ws)
        for _ in range(5):
            await recv(ws)
        read = (await client.get(f"/v1/sessions/{session['id']}")).json()
        reply = read["messages"][1]
        assert reply["status"] == "pending" and reply["job_id"] == start["data"]["job_id"]
        assert reply["content"].startswith("user: w0 w1 w2")
        await send(ws, "stop", {"job_id": start["data"]["job_id"]})


async def _long_history(db: asyncpg.Connection, session_id: str, count: int) -> None:
    """`count` answered messages written straight to PostgreSQL (as many real turns would)."""
    await db.execute(
        "INSERT INTO chat_messages (id, session_id, position, role, content, status) "
        "SELECT gen_random_uuid(), $1::uuid, g, "
        "CASE WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END, "
        "CASE WHEN g % 2 = 0 THEN 'hi' ELSE 'ok' END, 'complete' "
        "FROM generate_series(0, $2 - 1) g",
        session_id,
        count,
    )
    await db.execute(
        "UPDATE chat_sessions SET message_count = $2 WHERE id = $1::uuid", session_id, count
    )


async def test_a_session_longer_than_max_messages_drops_its_oldest_turns(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """256 answered turns (512 messages, INFERQ_MAX_MESSAGES) do not lock the session: a new
    turn keeps the system prompt, drops the oldest turns and records the truncation."""
    session = await new_session(client, model="echo", system_prompt="sys words")
    await _long_history(db, str(session["id"]), 512)
    async with connect(ws_url(stack)) as ws:
        for prompt in ("one more turn", "and another"):
            start, frames = await chat(
                ws, prompt, session_id=session["id"], params={"max_tokens": 2}
            )
            assert frames[-1]["event"] == "stream_end", frames[-1]
            job = await db.fetchrow(
                "SELECT messages, prompt_truncated, original_prompt_tokens, "
                "effective_prompt_tokens FROM jobs WHERE id = $1::uuid",
                start["job_id"],
            )
            messages = json.loads(job["messages"])
            assert len(messages) <= 512
            assert messages[0] == {"role": "system", "content": "sys words"}
            assert messages[-1] == {"role": "user", "content": prompt}
            assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 255 + ["user"]
            # The oldest turns went (the second message kept is the newest 255 turns' first).
            assert (
                messages[1]["content"].startswith("[…")
                and "earlier messages omitted" in (messages[1]["content"])
            )
            assert job["prompt_truncated"] is True  # short in tokens: only the count cut it
            if prompt == "one more turn":  # echo: a token a word of "role: content" lines
                assert job["original_prompt_tokens"] == 3 + 512 * 2 + 4
                assert job["effective_prompt_tokens"] == 3 + 510 * 2 + 6 + 4  # and the mark
    read = (await client.get(f"/v1/sessions/{session['id']}", params={"after": 511})).json()
    assert [m["status"] for m in read["messages"]] == ["complete"] * 4
    turns = await db.fetchval(
        "SELECT truncated_turns FROM chat_session_stats WHERE session_id = $1::uuid",
        session["id"],
    )
    assert turns == 2


async def test_deleting_a_session_cancels_its_running_turn(
    stack: str, client: httpx.AsyncClient
) -> None:
    """The reply of a deleted session cannot be read: its job is cancelled, not run on."""
    session = await new_session(client, model="echo")
    long = " ".join(f"w{i}" for i in range(300))  # echo: 0.03 s a token, 9 s in all
    async with connect(ws_url(stack)) as ws:
        data = {"session_id": session["id"], "prompt": long, "params": {"max_tokens": 300}}
        await send(ws, "stream_chat", data)
        start = await recv(ws)
        assert start["event"] == "stream_start", start
        job_id = start["data"]["job_id"]
        assert (await recv(ws))["event"] == "stream_token"  # running
        assert (await client.delete(f"/v1/sessions/{session['id']}")).status_code == 204
        frames = await until_end(ws, job_id, timeout=10)
    assert frames[-1]["event"] == "stream_end", frames[-1]
    assert frames[-1]["data"]["finish_reason"] == "cancelled"
    job = await wait_final(client, job_id, timeout=5)
    assert job["status"] == "cancelled" and job["usage"]["completion_tokens"] < 300
    assert (await client.get(f"/v1/sessions/{session['id']}")).status_code == 404


async def test_a_blank_prompt_starts_no_turn(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A whitespace-only prompt is refused like an empty one, in a new or an existing session."""
    session = await new_session(client, model="echo")
    sessions = await db.fetchval("SELECT count(*) FROM chat_sessions")
    async with connect(ws_url(stack)) as ws:
        for prompt, data in [
            ("", {}),
            ("   ", {}),
            (" \n\t ", {"session_id": session["id"]}),
            ("\u3000", {"session_id": session["id"]}),  # an ideographic space
        ]:
            await send(ws, "stream_chat", {"prompt": prompt, "model": "echo", **data})
            refused = await recv(ws)
            assert refused["event"] == "error", refused
            assert refused["data"]["code"] == "invalid_value"
            assert refused["data"]["message"].startswith("prompt:"), refused
        _, frames = await chat(ws, " fine ", session_id=session["id"], params={"max_tokens": 1})
        assert frames[-1]["event"] == "stream_end"
    assert await db.fetchval("SELECT count(*) FROM chat_sessions") == sessions
    read = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert read["message_count"] == 2 and read["title"] == "fine"


async def test_a_second_turn_while_one_generates_is_refused(
    stack: str, client: httpx.AsyncClient
) -> None:
    """Two turns at once in one session: one starts, the other is 409 turn_in_progress (it
    would be generated without the first); once the first ends (here: stopped), the next is
    taken."""
    session = await new_session(client, model="echo")
    prompts = [" ".join(f"{letter}{i}" for i in range(300)) for letter in "vw"]  # 9 s each
    async with connect(ws_url(stack)) as ws:
        for prompt in prompts:  # each chat is a task of its own: either may come first
            data = {"session_id": session["id"], "prompt": prompt, "params": {"max_tokens": 300}}
            await send(ws, "stream_chat", data)
        frames = [await recv(ws) for _ in range(3)]
        start = next(f for f in frames if f["event"] == "stream_start")
        refused = [f for f in frames if f["event"] == "error"]
        assert [f["data"]["code"] for f in refused] == ["turn_in_progress"], frames
        job_id = start["data"]["job_id"]
        assert job_id in refused[0]["data"]["message"]
        await send(ws, "stop", {"job_id": job_id})
        ended = await until_end(ws, job_id)
        assert ended[-1]["data"]["finish_reason"] == "cancelled"
        _, frames = await chat(ws, "next", session_id=session["id"], params={"max_tokens": 1})
        assert frames[-1]["event"] == "stream_end"
    read = (await client.get(f"/v1/sessions/{session['id']}")).json()
    messages = read["messages"]
    assert messages[0]["content"] in prompts and messages[2]["content"] == "next"
    assert [m["status"] for m in messages] == ["complete", "partial", "complete", "complete"]
    assert messages[1]["job_id"] == job_id


async def test_a_reply_left_pending_after_its_job_ended_does_not_lock_the_session(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    session = await new_session(client, model="echo")
    async with connect(ws_url(stack)) as ws:
        start, _ = await chat(ws, "first", session_id=session["id"], params={"max_tokens": 1})
    ended_job = start["job_id"]  # completed
    # Two replies stuck `pending`: one of a job that ended, one of a job that is gone.
    for position, job_id in ((2, ended_job), (4, str(uuid.uuid4()))):
        await db.execute(
            "INSERT INTO chat_messages (id, session_id, position, role, content, status, job_id) "
            "VALUES (gen_random_uuid(), $1::uuid, $2, 'user', 'lost', 'complete', NULL), "
            "(gen_random_uuid(), $1::uuid, $2 + 1, 'assistant', '', 'pending', $3::uuid)",
            session["id"],
            position,
            job_id,
        )
    await db.execute(
        "UPDATE chat_sessions SET message_count = 6 WHERE id = $1::uuid", session["id"]
    )
    async with connect(ws_url(stack)) as ws:
        start, frames = await chat(ws, "again", session_id=session["id"], params={"max_tokens": 4})
    assert frames[-1]["event"] == "stream_end", frames[-1]
    # The stuck turns are left out of the context: it is the first turn and the new prompt.
    assert frames[-1]["data"]["finish_reason"] == "length"
    job = (await client.get(f"/v1/jobs/{start['job_id']}")).json()
    assert job["output"] == "user: first assistant: user:"
