"""A keep-alive HTTP/1.1 client on asyncio streams, for the `cache` and `capacity` scenarios.

httpx spent about 3 ms of CPU per request on a 2-core host, more than the inferq API it was
measuring (2.7 ms per L1 hit): `capacity` then measured the load generator. This client writes
each request in one call and parses only the status line, the headers and the body, by
Content-Length or chunked. It offers the part of `httpx.AsyncClient` the targets use (`post`,
`stream`) and raises httpx's exceptions, so the same target code drives either client, and
every target of a `cache` or `capacity` run uses this one. One client's sequential L1 hits
took 3.71 / 8.08 ms p50 / p99 through httpx and 2.80 / 6.17 through this client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

_TIMEOUT_S = 600.0
_DRAIN_S = 0.05


class LeanResponse:
    """What the targets read of an httpx.Response."""

    def __init__(self, status_code: int, headers: httpx.Headers, body: AsyncIterator[bytes]):
        self.status_code = status_code
        self.headers = headers
        self._body = body
        self.content = b""

    async def aread(self) -> bytes:
        self.content = b"".join([chunk async for chunk in self._body])
        return self.content

    def json(self) -> Any:
        return json.loads(self.content)

    async def aiter_lines(self) -> AsyncIterator[str]:
        pending = b""
        async for chunk in self._body:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode()
        if pending:
            yield pending.rstrip(b"\r").decode()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.reusable = False  # set once a response was read to its end on a kept-alive socket

    async def send(self, request: bytes) -> LeanResponse:
        self.reusable = False
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"bad status line {status_line!r}")
        fields = [line.partition(":") for line in lines]
        headers = httpx.Headers([(name, value.strip()) for name, _, value in fields])
        keep_alive = headers.get("connection", "").lower() != "close"
        return LeanResponse(int(parts[1]), headers, self._body(headers, keep_alive))

    async def _body(self, headers: httpx.Headers, keep_alive: bool) -> AsyncIterator[bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers are sent to us
                    break
                chunk = await self.reader.readexactly(size + 2)
                yield chunk[:-2]
        elif "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
        else:  # the body ends with the connection
            yield await self.reader.read()
            keep_alive = False
        self.reusable = keep_alive

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """Connections to one server, kept alive and reused; default headers on every request."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        url = httpx.URL(base_url)
        self.base_url = url
        self.host, self.port = url.host, url.port or 80
        self._head_lines = f"Host: {self.host}:{self.port}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in (headers or {}).items()
        )
        self._idle: list[_Connection] = []

    @classmethod
    def like(cls, client: httpx.AsyncClient) -> LeanClient:
        """A lean client for the server and default headers of an httpx client."""
        defaults = {k: v for k, v in client.headers.items() if k.lower() == "authorization"}
        return cls(str(client.base_url), defaults)

    async def get(self, path: str) -> LeanResponse:
        return await self._whole("GET", path, None)

    async def post(
        self, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> LeanResponse:
        return await self._whole("POST", path, json, headers)

    async def _whole(
        self, method: str, path: str, json: Any, headers: dict[str, str] | None = None
    ) -> LeanResponse:
        async with self.stream(method, path, json=json, headers=headers) as response:
            await response.aread()
        return response

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[LeanResponse]:
        body = b"" if json is None else _dumps(json).encode()
        request = f"{method} {path} HTTP/1.1\r\n{self._head_lines}"
        request += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if json is not None:
            request += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        connection = await self._connection()
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                response = await connection.send(request.encode("latin-1") + b"\r\n" + body)
                yield response
            if not connection.reusable:
                await _drain(response)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            connection.close()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof():
                return connection
            connection.close()  # the server closed it while idle (its keep-alive timeout)
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise httpx.ConnectError(f"{self.host}:{self.port}: {exc}") from exc
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


async def _drain(response: LeanResponse) -> None:
    """Read what the caller left of a body that has already arrived (an SSE reader stops at
    the `end` event, before the chunked body's last chunk), so the connection can be reused."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            await response.aread()
    except TimeoutError:
        pass  # still streaming: the connection closes


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
