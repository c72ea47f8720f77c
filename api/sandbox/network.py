"""httpcore's network on asyncio's own transports, for the model gateway's upstream connections.

httpcore's default network is anyio's: every read and write opens a cancel scope with its own timer,
checks for cancellation (a trip through the event loop) and asks sniffio which library runs it. On the way
of every model call of every sandboxed turn that was a good part of the gateway's CPU. Here a connection is
an asyncio protocol; a read waits on one future with one timer.

Writes also wait for the next read (or for FLUSH_BYTES of them): httpcore writes a request's head and its
body separately, and with TCP_NODELAY each would leave as its own segment, waking the model API's server
first for a head it cannot act on. Every request is followed by a read of its response (so is a proxy's
CONNECT or SOCKS handshake, and TLS's start flushes first), so nothing written waits longer than that.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore
from httpcore import SOCKET_OPTION

# What a read may buffer before the connection stops reading from the socket (the CLI reads slower).
HIGH_WATER_BYTES = 256 * 1024
# A streamed request body goes out in pieces of at least this size.
FLUSH_BYTES = 64 * 1024


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connections as asyncio protocols on the running loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_Protocol, host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return Stream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return Stream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Protocol(asyncio.Protocol):
    """Received bytes wait in a buffer for the stream's next read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER_BYTES and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def wait_readable(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._reader = waiter = loop.create_future()
        try:
            await _within(waiter, timeout)
        finally:
            self._reader = None

    async def drain(self, timeout: float | None) -> None:
        if not self._writing_paused or self.eof:
            return
        loop = asyncio.get_running_loop()
        self._drained = waiter = loop.create_future()
        try:
            await _within(waiter, timeout)
        finally:
            self._drained = None


async def _within(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """`waiter`, or TimeoutError after `timeout`: one timer, not a cancel scope per wait."""
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Stream(httpcore.AsyncNetworkStream):
    """One connection: reads from the protocol's buffer; writes held until the next read."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._write_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush()
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                await protocol.wait_readable(timeout)
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("timed out reading from the model API") from exc
        buffer = protocol.buffer
        if buffer:
            if len(buffer) <= max_bytes:
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[:max_bytes])
                del buffer[:max_bytes]
            if protocol.paused and len(buffer) <= HIGH_WATER_BYTES // 4:
                protocol.paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._pending_size += len(buffer)
            self._write_timeout = timeout
            if self._pending_size >= FLUSH_BYTES:
                await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection to the model API is closed")
        self._transport.write(data)
        try:
            await self._protocol.drain(self._write_timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out writing to the model API") from exc

    async def aclose(self) -> None:
        self._pending.clear()
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        await self._flush()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        assert transport is not None
        # The TLS transport is the one to pause and resume reading from now on.
        self._protocol.transport = transport
        return Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            sock: socket.socket | None = self._transport.get_extra_info("socket")
            return sock
        if info == "is_readable":
            # An idle connection with something to read has been closed by the server (or is broken):
            # the transport reads eagerly, so that shows in the protocol, not on the socket.
            return bool(self._protocol.buffer) or self._protocol.eof or self._transport.is_closing()
        return None
