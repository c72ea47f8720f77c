"""UvicornTask: what its TCP connections promise the servers built on it (the scripted model, tests' apps)."""

from __future__ import annotations

import socket

import httpx
from starlette.types import Receive, Scope, Send

from api.uvicorn_task import UvicornTask


async def _streamed(scope: Scope, receive: Receive, send: Send) -> None:
    """A response in several writes, as the scripted model streams server-sent events."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for part in (b"one\n", b"two\n"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"three\n"})


class TestTcpConnections:
    async def test_accepted_connections_send_small_writes_at_once(self) -> None:
        # With Nagle on, the second small write of a response waited for the client's delayed ACK: 40 ms
        # stalls on model calls in tests and benchmarks (plain asyncio only turns it off for sockets whose
        # proto is IPPROTO_TCP, and an accepted socket takes its listener's).
        server = UvicornTask(_streamed, name="nodelay-test", log_level="warning", lifespan="off")
        await server.start()
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/")
                assert response.text == "one\ntwo\nthree\n"
                assert server._server is not None
                connections = list(server._server.server_state.connections)
                assert connections, "the client's keep-alive connection is still open"
                for connection in connections:
                    sock = connection.transport.get_extra_info("socket")
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            await server.stop()
