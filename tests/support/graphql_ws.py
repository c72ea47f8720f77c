"""A small, strict graphql-transport-ws client for tests (enisdenjo/graphql-ws PROTOCOL.md).

Strict means: anything the server sends that the protocol does not allow (an unknown message type, a
second ``connection_ack``, a message for an id the server already finished, a binary frame) is recorded in
``GraphQLWSClient.protocol_violations`` and, by default, fails the test when the client is closed. Messages
for ids the *client* completed are dropped silently: the protocol lets them race with our ``complete``.
"""


# `await sub.next(timeout=2)`, and each helper owns its deadline (overall, not per awaited step).

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

PROTOCOL = "graphql-transport-ws"

JSONDict = dict[str, Any]


class ConnectionClosedWithCode(Exception):
    """The socket closed (or was closed by the server) with this WebSocket close code and reason."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"websocket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason or ""


class GraphQLWSError(Exception):
    """The server answered an operation with an ``error`` message; ``payload`` is its GraphQLError list."""

    def __init__(self, payload: Any) -> None:
        super().__init__(f"graphql-transport-ws error: {payload!r}")
        self.payload = payload


class SubscriptionCompleted(Exception):
    """``Subscription.next()`` found the stream completed by the server instead of a ``next`` message."""


def _closed_exc(ws: ClientConnection) -> ConnectionClosedWithCode:
    return ConnectionClosedWithCode(ws.close_code, ws.close_reason)


def _init_payload(token: str | None, init_payload: Mapping[str, Any] | None) -> JSONDict:
    payload = dict(init_payload or {})
    if token is not None:
        payload.setdefault("Authorization", f"Bearer {token}")
    return payload


async def _open_socket(
    ws_url: str,
    subprotocols: Sequence[str],
    origin: str | None,
    additional_headers: Mapping[str, str] | None,
    open_timeout: float,
) -> ClientConnection:
    return await connect(
        ws_url,
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        origin=Origin(origin) if origin is not None else None,
        additional_headers=dict(additional_headers or {}),
        open_timeout=open_timeout,
        # Loopback only: a proxy from the environment must never see test traffic.
        proxy=None,
        max_size=None,
    )


class Subscription:
    """One operation on a ``GraphQLWSClient``: an async iterator of the ``next`` payloads.

    Iteration stops on ``complete``, raises ``GraphQLWSError`` on ``error`` and
    ``ConnectionClosedWithCode`` if the socket closes first. ``async with`` completes it on exit.
    """

    def __init__(self, client: GraphQLWSClient, operation_id: str) -> None:
        self.client = client
        self.id = operation_id
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # The first terminal message is kept so every later read repeats it instead of hanging.
        self._terminal: tuple[str, Any] | None = None
        self.completed_by_client = False

    @property
    def finished(self) -> bool:
        """True once the server completed or errored it, the socket closed, or we completed it."""
        return self._terminal is not None or self.completed_by_client

    def _deliver(self, kind: str, payload: Any) -> None:
        self._queue.put_nowait((kind, payload))

    async def _receive(self) -> tuple[str, Any]:
        if self._terminal is not None:
            return self._terminal
        if self.completed_by_client:
            return ("complete", None)
        item = await self._queue.get()
        if item[0] != "next":
            self._terminal = item
        return item

    async def next(self, timeout: float = 10.0) -> JSONDict:
        """The next ``next`` payload (``{"data": …, "errors": …}``).

        Raises ``TimeoutError``, ``SubscriptionCompleted``, ``GraphQLWSError`` or
        ``ConnectionClosedWithCode``.
        """
        kind, payload = await asyncio.wait_for(self._receive(), timeout)
        if kind == "next":
            result: JSONDict = payload
            return result
        if kind == "error":
            raise GraphQLWSError(payload)
        if kind == "complete":
            raise SubscriptionCompleted(self.id)
        raise _closed_exc(self.client.ws)

    async def expect_complete(self, timeout: float = 10.0) -> None:
        """Fail unless the very next message for this operation is ``complete``."""
        try:
            payload = await self.next(timeout)
        except SubscriptionCompleted:
            return
        raise AssertionError(f"expected complete for operation {self.id}, got next {payload!r}")

    async def collect(self, timeout: float = 10.0) -> list[JSONDict]:
        """Every ``next`` payload until ``complete``, within ``timeout`` seconds overall."""
        deadline = time.monotonic() + timeout
        results: list[JSONDict] = []
        while True:
            try:
                results.append(await self.next(max(deadline - time.monotonic(), 0.0)))
            except SubscriptionCompleted:
                return results

    async def complete(self) -> None:
        """Send ``complete``: we stop listening. A no-op if the operation is already finished."""
        if self.finished:
            return
        self.completed_by_client = True
        self.client._forget(self.id, by_client=True)
        if not self.client.closed:
            with contextlib.suppress(ConnectionClosedWithCode):
                await self.client._send({"id": self.id, "type": "complete"})

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JSONDict:
        try:
            return await self.next(timeout=3600.0)
        except SubscriptionCompleted:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.complete()


class GraphQLWSClient:
    """A connected, acknowledged graphql-transport-ws socket; several operations may run on it at once.

    Use ``async with GraphQLWSClient.connect(ws_url, token=...) as client`` or ``await GraphQLWSClient.open``
    plus ``await client.close()``. A reader task answers ``ping`` with ``pong`` and routes messages by id.
    """

    def __init__(self, ws: ClientConnection, ack_payload: Any, *, strict: bool = True) -> None:
        self.ws = ws
        self.ack_payload = ack_payload
        self.strict = strict
        self.protocol_violations: list[str] = []
        self.pongs = 0
        self._ops: dict[str, Subscription] = {}
        self._client_completed: set[str] = set()
        self._server_finished: set[str] = set()
        self._ids = itertools.count(1)
        self._pong = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="graphql-ws-reader")

    @classmethod
    async def open(
        cls,
        ws_url: str,
        *,
        token: str | None = None,
        init_payload: Mapping[str, Any] | None = None,
        ack_timeout: float = 10.0,
        origin: str | None = None,
        additional_headers: Mapping[str, str] | None = None,
        strict: bool = True,
    ) -> GraphQLWSClient:
        """Connect, send ``connection_init`` and wait for ``connection_ack``.

        The init payload is ``init_payload`` plus ``{"Authorization": "Bearer <token>"}`` when a token is
        given. Raises ``ConnectionClosedWithCode`` if the server closes instead (4403 for a bad key) and
        ``TimeoutError`` if no ack arrives within ``ack_timeout``.
        """
        ws = await _open_socket(ws_url, (PROTOCOL,), origin, additional_headers, ack_timeout)
        try:
            if ws.subprotocol != PROTOCOL:
                raise AssertionError(f"server picked subprotocol {ws.subprotocol!r}, not {PROTOCOL}")
            await ws.send(
                json.dumps({"type": "connection_init", "payload": _init_payload(token, init_payload)})
            )
            ack = await asyncio.wait_for(_await_ack(ws), ack_timeout)
        except BaseException:
            await ws.close()
            raise
        return cls(ws, ack.get("payload"), strict=strict)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        ws_url: str,
        *,
        token: str | None = None,
        init_payload: Mapping[str, Any] | None = None,
        ack_timeout: float = 10.0,
        origin: str | None = None,
        additional_headers: Mapping[str, str] | None = None,
        strict: bool = True,
    ) -> AsyncIterator[GraphQLWSClient]:
        """``open`` as an async context manager; closes with 1000 on exit."""
        client = await cls.open(
            ws_url,
            token=token,
            init_payload=init_payload,
            ack_timeout=ack_timeout,
            origin=origin,
            additional_headers=additional_headers,
            strict=strict,
        )
        try:
            yield client
        finally:
            await client.close()

    # Socket state

    @property
    def closed(self) -> bool:
        return self._reader.done()

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (None while open; 1006 if the TCP connection just dropped)."""
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket; returns the close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket and stop the reader. With ``strict``, fail on recorded protocol violations."""
        await self.ws.close(code, reason)
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self.strict and self.protocol_violations:
            raise AssertionError(f"graphql-transport-ws violations: {self.protocol_violations}")

    # Operations

    async def subscribe(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        operation_id: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Send ``subscribe`` and return the operation; the frame is on the wire when this returns."""
        op_id = operation_id if operation_id is not None else str(next(self._ids))
        if op_id in self._ops:
            # The server would close 4409; tests that want that should use raw_ws.
            raise ValueError(f"operation id {op_id!r} is still active on this client")
        payload: JSONDict = {"query": query}
        if variables is not None:
            payload["variables"] = dict(variables)
        if operation_name is not None:
            payload["operationName"] = operation_name
        if extensions is not None:
            payload["extensions"] = dict(extensions)
        sub = Subscription(self, op_id)
        self._ops[op_id] = sub
        self._client_completed.discard(op_id)
        self._server_finished.discard(op_id)
        await self._send({"id": op_id, "type": "subscribe", "payload": payload})
        return sub

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> JSONDict:
        """A single-result operation over the socket: exactly one ``next`` then ``complete``.

        Returns the ``next`` payload as is (``data`` and maybe ``errors``); an ``error`` message raises
        ``GraphQLWSError``.
        """
        sub = await self.subscribe(query, variables, operation_name)
        try:
            result = await sub.next(timeout)
        except SubscriptionCompleted:
            raise AssertionError(f"operation {sub.id} completed without a result") from None
        await sub.expect_complete(timeout)
        return result

    async def ping(self, timeout: float = 5.0) -> None:
        """Send a protocol ``ping`` and wait for a ``pong``."""
        self._pong.clear()
        await self._send({"type": "ping"})
        await asyncio.wait_for(self._pong.wait(), timeout)

    # Internals

    async def _send(self, message: JSONDict) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed:
            raise _closed_exc(self.ws) from None

    def _forget(self, op_id: str, *, by_client: bool) -> None:
        self._ops.pop(op_id, None)
        (self._client_completed if by_client else self._server_finished).add(op_id)

    def _violation(self, text: str) -> None:
        self.protocol_violations.append(text)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                await self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            for sub in self._ops.values():
                sub._deliver("closed", None)
            self._ops.clear()

    async def _dispatch(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self._violation(f"binary frame: {raw[:80]!r}")
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self._violation(f"not JSON: {raw[:200]!r}")
            return
        if not isinstance(message, dict):
            self._violation(f"not an object: {raw[:200]!r}")
            return
        kind = message.get("type")
        if kind == "ping":
            with contextlib.suppress(ConnectionClosedWithCode):
                await self._send({"type": "pong"})
        elif kind == "pong":
            self.pongs += 1
            self._pong.set()
        elif kind in ("next", "error", "complete"):
            self._route(kind, message)
        elif kind == "connection_ack":
            self._violation("second connection_ack")
        else:
            self._violation(f"unexpected message: {raw[:200]!r}")

    def _route(self, kind: str, message: JSONDict) -> None:
        op_id = message.get("id")
        if not isinstance(op_id, str):
            self._violation(f"{kind} without a string id: {message!r}")
            return
        sub = self._ops.get(op_id)
        if sub is None:
            if op_id in self._server_finished:
                self._violation(f"{kind} for operation {op_id} after the server finished it")
            elif op_id not in self._client_completed:
                self._violation(f"{kind} for unknown operation {op_id}")
            return
        payload = message.get("payload")
        if kind == "next" and not isinstance(payload, dict):
            self._violation(f"next payload is not an object: {message!r}")
        if kind == "error" and not isinstance(payload, list):
            self._violation(f"error payload is not a list: {message!r}")
        if kind != "next":
            self._forget(op_id, by_client=False)
        sub._deliver(kind, payload)


async def _await_ack(ws: ClientConnection) -> JSONDict:
    """Read until ``connection_ack``, answering pings; a close becomes ``ConnectionClosedWithCode``."""
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else ws.close_code
            reason = exc.rcvd.reason if exc.rcvd is not None else ws.close_reason
            raise ConnectionClosedWithCode(code, reason) from None
        message = json.loads(raw)
        if message.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        elif message.get("type") == "connection_ack":
            result: JSONDict = message
            return result
        elif message.get("type") != "pong":
            raise AssertionError(f"expected connection_ack, got {message!r}")


# Raw access for protocol tests that must send what a well-behaved client never would.


@contextlib.asynccontextmanager
async def raw_ws(
    ws_url: str,
    *,
    subprotocols: Sequence[str] = (PROTOCOL,),
    origin: str | None = None,
    additional_headers: Mapping[str, str] | None = None,
    open_timeout: float = 10.0,
) -> AsyncIterator[ClientConnection]:
    """A bare websockets connection (no init, no reader); closed on exit."""
    ws = await _open_socket(ws_url, subprotocols, origin, additional_headers, open_timeout)
    try:
        yield ws
    finally:
        await ws.close()


async def send_json(ws: ClientConnection, message: Any) -> None:
    await ws.send(json.dumps(message))


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> JSONDict:
    """The next text frame, decoded; raises ``ConnectionClosedWithCode`` if the socket closes first."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        raise _closed_exc(ws) from None
    message: JSONDict = json.loads(raw)
    return message


async def wait_close(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Drain messages until the server closes; returns (code, reason). Raises TimeoutError if it doesn't."""

    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code, ws.close_reason
