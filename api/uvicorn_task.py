"""An ASGI app served by uvicorn as a task of the current event loop (the scripted model, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    """uvicorn that reports readiness as an event and leaves the host's signal handlers alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The host process (pytest, the API server) owns SIGINT/SIGTERM; uvicorn would replace them.
        yield


class UvicornTask:
    """Serve `app` on host:port (0: a free port, known as `.port` once start() returns), or on the Unix
    socket `uds`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        uds: str | None = None,
        name: str = "uvicorn",
        **config: Any,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.uds = uds
        self.name = name
        self.config = config
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        # Binding here, not in uvicorn, tells us the port that port=0 picked before anyone connects.
        if self.uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.uds)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.uds)
            os.chmod(self.uds, 0o600)
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets whose proto says TCP, and an
            # accepted socket takes the listener's. With Nagle on, a response written in several pieces
            # (headers, then SSE events) waited for the client's delayed ACK: 40 ms stalls on some model
            # calls of the scripted model on a plain asyncio loop (uvloop sets TCP_NODELAY itself).
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
        sock.set_inheritable(True)
        self._socket = sock
        server = _Server(uvicorn.Config(self.app, **self.config))
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=self.name)
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._task  # re-raises the startup failure
            raise RuntimeError(f"{self.name} stopped during startup")

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await task
        finally:
            if self._socket is not None:
                self._socket.close()
            if self.uds is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.uds)
            self._server = self._task = self._socket = None
