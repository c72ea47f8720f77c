"""uvicorn's WebSocket protocol, with frames shared by many sockets built once and writes coalesced.

A subscription event that many watchers of a session receive is executed and JSON-encoded once per
replica (graphql_schema/live/shared_events.py); the socket handler marks the ASGI message that carries
it with :data:`SHARED_FRAME`. Then per socket uvicorn still compressed it (permessage-deflate, a context
per socket), framed it, and wrote it with a system call of its own: in a burst to 100 watchers that was
the largest cost left (issue 10). Here:

- the server declines context takeover for what it sends (``server_no_context_takeover``, which RFC 7692
  lets a server answer even when the client did not ask). Each message it sends is then compressed
  alone, so the bytes of a frame (header and payload: server frames are not masked) depend only on the
  text and the negotiated window size, and a shared frame is compressed and framed once per replica
  (:class:`FrameCache`). Compression per message is a little weaker than with a context kept across
  messages; that is the trade.
- shared frames are queued and written once per event-loop iteration, so a watcher that is handed a run
  of events gets them in one write instead of one system call each. Anything else the application sends
  (and its close) first writes what is queued, so the order on the socket is the order of the sends;
  uvicorn's own control frames (pings, pongs) may go ahead of queued messages, which the protocol allows.
- the protocol puts itself in the scope's extensions (:data:`SHARED_SINK`), so that the socket handler
  can queue a shared frame's bytes without the ASGI send chain while the socket is open and writable
  (:meth:`SharedFrameWebSocketProtocol.shared_window_bits_now`); otherwise it sends the ASGI message.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

# The key of an ASGI `websocket.send` message whose text many sockets send alike (other servers ignore it).
SHARED_FRAME = "caga.shared_frame"
# The key, in a WebSocket scope's "extensions", of the protocol itself (see shared_window_bits_now).
SHARED_SINK = "caga.shared_frame_sink"
# uvicorn's own permessage-deflate settings, plus no context takeover on the server's side.
_WINDOW_BITS = 12
_COMPRESS = {"memLevel": 5}
# Larger texts are framed per socket: rarely shared, and they would crowd the cache.
_MAX_CACHED_CHARS = 256 * 1024


class FrameCache:
    """An LRU of wire bytes by (text, the compression negotiated: None or the window bits), bounded in
    entries and in bytes (texts and frames)."""

    def __init__(self, size: int = 4096, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: OrderedDict[tuple[str, int | None], bytes] = OrderedDict()
        self.built = 0  # frames framed (misses), for tests and diagnostics

    def frame(self, text: str, window_bits: int | None) -> bytes:
        key = (text, window_bits)
        found = self._frames.get(key)
        if found is not None:
            self._frames.move_to_end(key)
            return found
        data = self.build(text, window_bits)
        if len(text) <= _MAX_CACHED_CHARS:
            self._frames[key] = data
            self._bytes += len(text) + len(data)
            while len(self._frames) > self._size or self._bytes > self._max_bytes:
                (old_text, _), old_data = self._frames.popitem(last=False)
                self._bytes -= len(old_text) + len(old_data)
        return data

    def build(self, text: str, window_bits: int | None) -> bytes:
        """The frame's wire bytes, built and not kept (the caller keeps them)."""
        self.built += 1
        extensions = [] if window_bits is None else [_deflate(window_bits)]
        return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=extensions)

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0


FRAMES = FrameCache()


def _deflate(window_bits: int) -> PerMessageDeflate:
    """A compressor as a socket that negotiated `window_bits` and no server context takeover has one."""
    return PerMessageDeflate(
        remote_no_context_takeover=True,  # it only ever compresses: no decompressor
        local_no_context_takeover=True,
        remote_max_window_bits=_WINDOW_BITS,
        local_max_window_bits=window_bits,
        compress_settings=_COMPRESS,
    )


class SharedFrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol; pass the class as ``uvicorn.run(ws=...)``.

    With ``shared_compression`` off (:func:`protocol_class`), permessage-deflate keeps uvicorn's context
    per socket: such sockets compress every frame themselves, and only uncompressed ones share frames.
    """

    shared_compression = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate and self.shared_compression:
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_max_window_bits=_WINDOW_BITS,
                        client_max_window_bits=_WINDOW_BITS,
                        compress_settings=_COMPRESS,
                        server_no_context_takeover=True,
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )
        self._queued: list[bytes] = []
        self._flush_scheduled = False
        self._known_window_bits: int | None = -2  # -2: not looked up yet (the handshake decides them)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The application's task is created but has not run yet: it sees the sink in its scope.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})[SHARED_SINK] = self

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # No cycle through the scope (the frozen heap's collector runs rarely): the socket is done.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.get("extensions", {}).pop(SHARED_SINK, None)

    def shared_window_bits_now(self) -> int | None:
        """The compression a shared frame needs on this socket (None: none) when :meth:`queue_shared_now`
        may take one at once, or -1: then send it as an ASGI message instead.

        In a burst each watcher sends every event, and the ASGI path (Starlette's WebSocket, the
        middleware's send wrappers, this protocol's ``send``) is a chain of coroutines per message that
        only hands the message down. When the socket is writable and open that chain would end in this
        protocol without suspending, so the socket handler may skip it. Otherwise (paused for
        backpressure, closing, a compression that cannot share) the ASGI path waits for the socket or
        raises, as before.
        """
        if self.disconnected or not self.writable.is_set() or not self._open():
            return -1
        window_bits = self._known_window_bits
        if window_bits == -2:
            window_bits = self._known_window_bits = self._window_bits()
        return window_bits

    def queue_shared_now(self, data: bytes) -> None:
        """Queue a frame's wire bytes, built for what :meth:`shared_window_bits_now` said, with no await
        in between."""
        self._queued.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    async def send(self, message: ASGISendEvent) -> None:
        if message.get(SHARED_FRAME) and message["type"] == "websocket.send" and self._open():
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            text = message.get("text")
            window_bits = self._window_bits()
            if isinstance(text, str) and window_bits != -1 and self._open():
                self._queued.append(FRAMES.frame(text, window_bits))
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.loop.call_soon(self._flush)
                return
        self._flush()
        await super().send(message)

    def _open(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
            and self.conn.state is State.OPEN
        )

    def _window_bits(self) -> int | None:
        """None: no compression; the server's window bits when the frames can be shared; -1: they can't."""
        extensions = self.conn.extensions
        if not extensions:
            return None
        if len(extensions) == 1 and isinstance(extensions[0], PerMessageDeflate):
            deflate = extensions[0]
            if deflate.local_no_context_takeover and deflate.compress_settings == _COMPRESS:
                return deflate.local_max_window_bits
        return -1

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._queued:
            return
        data = b"".join(self._queued)
        self._queued.clear()
        # After a close (ours or the peer's) the queued messages are moot and must not follow it.
        if not self.close_sent and not self.transport.is_closing() and self.conn.state is State.OPEN:
            self.transport.write(data)


class PerSocketCompressionProtocol(SharedFrameWebSocketProtocol):
    shared_compression = False


def protocol_class(*, shared_compression: bool) -> type[SharedFrameWebSocketProtocol]:
    """The protocol for ``uvicorn.run(ws=...)`` (setting WS_SHARED_COMPRESSION)."""
    return SharedFrameWebSocketProtocol if shared_compression else PerSocketCompressionProtocol
