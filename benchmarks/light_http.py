"""A minimal HTTP/1.1 client for the read benchmark's load: POST a JSON body, read the whole response.

The load client shares the machine's two cores with the server it measures. httpx spent about as much
CPU per request as a quarter to a half of what the server spent answering it (its request and response
models, header normalisation, its connection pool's bookkeeping), which the server then lacked at high
rates. This client does only what the benchmark needs: keep-alive connections to one loopback server, a
request written as one pre-built header block plus its JSON body, and a response read through to its
last byte (Content-Length, or chunked transfer coding) before it counts as received. What a request
measures is unchanged: from the moment it is due until its full response has arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson


class HttpError(Exception):
    """The request could not be sent or its response could not be read."""


class LightClient:
    """POSTs to one server over at most `max_connections` keep-alive connections."""

    def __init__(self, base_url: str, headers: dict[str, str], *, max_connections: int = 100) -> None:
        host_port = base_url.removeprefix("http://").rstrip("/")
        host, _, port = host_port.partition(":")
        self.host = host
        self.port = int(port or 80)
        self._head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> LightClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    async def post_json(self, path: str, payload: Any) -> tuple[int, bytes]:
        """The status and the body of the response to POSTing `payload` as JSON."""
        body = orjson.dumps(payload)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._slots:
            while self._idle:
                reader, writer = self._idle.pop()
                if not reader.at_eof():
                    try:
                        return await self._exchange(reader, writer, request)
                    except _Stale:
                        pass  # the server closed it while idle (keep-alive timeout): another one
                else:
                    writer.close()
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise HttpError(str(exc)) from exc
            try:
                return await self._exchange(reader, writer, request)
            except _Stale as exc:
                raise HttpError("the server closed a new connection without a response") from exc

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        """One request and its whole response. The connection goes back to the pool only once its
        response was read whole; anything else (an error, a cancellation mid-response) closes it, so no
        reply is ever read by another request. A connection the server closed before answering raises
        _Stale, as httpx retries such a request once on another connection."""
        reusable = False
        try:
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale from exc
                raise
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _Stale from exc
            status, body, reusable = await _response(head, reader)
            return status, body
        except _BROKEN as exc:
            raise HttpError(repr(exc)) from exc
        finally:
            if reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()


class _Stale(Exception):
    """A kept-alive connection the server had closed: nothing of the request was answered."""


_BROKEN = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


async def _response(head: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    chunked = False
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent to this client
                break
            parts.append(await reader.readexactly(size + 2))
        return status, b"".join(part[:-2] for part in parts), keep_alive
    if length is None:
        # Delimited by the connection's end (HTTP/1.0 style): read it all; the connection is spent.
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep_alive
