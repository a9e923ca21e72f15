"""`inferq chat`: a terminal chat client over the WebSocket /v1/ws.

Type a message to send it. Commands: /stop (stop the reply being written), /new (start a new
session), /session ID (continue a session), /sessions (list recent ones), /quit. At the end of
input (Ctrl-D, or a pipe running dry) the client waits for the reply in progress, then exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any, TextIO

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

HELP = "commands: /stop  /new  /session ID  /sessions  /quit  /help"


class ChatClient:
    """One socket, one reply at a time; tokens are printed as they arrive."""

    def __init__(
        self,
        ws: ClientConnection,
        http_base: str,
        *,
        session_id: str | None,
        model: str | None,
        max_tokens: int,
        headers: dict[str, str] | None = None,
        out: TextIO = sys.stdout,
    ):
        self.ws = ws
        self.http_base = http_base
        self.headers = headers
        self.session_id = session_id
        self.model = model
        self.max_tokens = max_tokens
        self.out = out
        self.job_id: str | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.started = asyncio.Event()

    async def run(self, lines: asyncio.Queue[str | None]) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while (line := await lines.get()) is not None:
                if not await self._handle(line.strip()):
                    return
            await self.idle.wait()  # end of input: let the reply in progress finish
        finally:
            reader.cancel()

    async def _handle(self, line: str) -> bool:
        """Act on one input line; False ends the client."""
        command, _, argument = line.partition(" ")
        if not line:
            return True
        if command == "/quit":
            return False
        if command == "/stop":
            if not self.idle.is_set():  # a prompt is out: wait until its job has an id
                await self.started.wait()
            if self.job_id:
                await self._send("stop", {"job_id": self.job_id})
            return True
        if command in ("/new", "/session", "/sessions", "/help"):
            await self.idle.wait()
            await self._command(command, argument.strip())
            return True
        await self.idle.wait()
        await self._prompt(line)
        return True

    async def _command(self, command: str, argument: str) -> None:
        if command == "/new":
            self.session_id = None
            self._print("[new session: it starts with your next message]\n")
        elif command == "/session" and argument:
            self.session_id = argument
            self._print(f"[session {argument}]\n")
        elif command == "/sessions":
            await self._list_sessions()
        else:
            self._print(HELP + "\n")

    async def _prompt(self, text: str) -> None:
        data: dict[str, Any] = {"prompt": text, "params": {"max_tokens": self.max_tokens}}
        if self.session_id:
            data["session_id"] = self.session_id
        if self.model:
            data["model"] = self.model
        self.idle.clear()
        self.started.clear()
        await self._send("stream_chat", data)

    async def _send(self, event: str, data: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                await self._on_event(message.get("event"), message.get("data") or {})
        except ConnectionClosed as exc:
            self._print(f"\n[connection closed: {exc.rcvd.code if exc.rcvd else 'no code'}]\n")
        finally:
            self.idle.set()
            self.started.set()

    async def _on_event(self, event: str | None, data: dict[str, Any]) -> None:
        if event == "stream_start":
            self.job_id = data["job_id"]
            self.started.set()
            if data["session_id"] != self.session_id:
                self.session_id = data["session_id"]
                self._print(f"[session {self.session_id}]\n")
        elif event == "stream_token":
            self._print(data["token"])
        elif event == "stream_end":
            self._print("\n" + _summary(data) + "\n")
            self._done()
        elif event == "error":
            self._print(f"\n[error {data.get('code')}: {data.get('message')}]\n")
            if data.get("job_id") in (None, self.job_id) and not self.idle.is_set():
                self._done()
        elif event == "ping":
            await self._send("pong", {})

    def _done(self) -> None:
        self.job_id = None
        self.idle.set()
        self.started.set()

    async def _list_sessions(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.http_base, timeout=10, headers=self.headers
        ) as http:
            response = await http.get("/v1/sessions", params={"limit": 20})
        if response.status_code != 200:
            self._print(f"[could not list sessions: {response.status_code}]\n")
            return
        for s in response.json()["data"]:
            mark = "*" if s["id"] == self.session_id else " "
            self._print(f"{mark} {s['id']}  {s['model']:<14} {s['title'] or '(untitled)'}\n")

    def _print(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _summary(end: dict[str, Any]) -> str:
    parts = [f"finish: {end.get('finish_reason')}", f"cache: {end.get('cache')}"]
    if usage := end.get("usage"):
        parts.append(f"{usage.get('completion_tokens')} tokens")
    timings = end.get("timings") or {}
    if timings.get("ttft_ms") is not None:
        parts.append(f"ttft {round(timings['ttft_ms'])} ms")
    return "[" + " · ".join(parts) + "]"


def _pump_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Read stdin in a daemon thread: a blocked readline must not hold up the exit."""

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="inferq-chat-stdin", daemon=True).start()


async def run_chat(
    url: str,
    *,
    session_id: str | None,
    model: str | None,
    max_tokens: int,
    api_key: str | None,
) -> int:
    """Chat until /quit or the end of input; returns the exit status."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    http_base = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    http_base = http_base.rsplit("/v1/ws", 1)[0]
    try:
        async with connect(url, additional_headers=headers, subprotocols=["inferq.v1"]) as ws:  # type: ignore[list-item]
            if sys.stdin.isatty():
                print(f"connected to {url}; {HELP}", file=sys.stderr)
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            _pump_stdin(asyncio.get_running_loop(), lines)
            client = ChatClient(
                ws,
                http_base,
                session_id=session_id,
                model=model,
                max_tokens=max_tokens,
                headers=headers,
            )
            await client.run(lines)
    except (OSError, ConnectionClosed) as exc:
        print(f"inferq chat: cannot talk to {url}: {exc}", file=sys.stderr)
        return 1
    return 0
