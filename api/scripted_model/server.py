"""Running the scripted model in-process, and the CLI environment that points at it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Generator
from types import TracebackType

import uvicorn

from api.scripted_model.app import create_scripted_model_app


def scripted_model_cli_env(base_url: str) -> dict[str, str]:
    """Environment for a Claude Code CLI that should talk to the scripted model, quickly and quietly.

    Required: ``ANTHROPIC_BASE_URL`` and an API key (any value; without one the CLI does not call the
    API at all). The rest are recommended: they drop the CLI's connectivity probe, the session-title
    request, telemetry, error reporting and update checks, none of which a test or demo wants. They do
    not switch off product behaviour under test (background tasks, compaction, checkpoints, memory).
    """
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "scripted-model-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    }


class _InProcessServer(uvicorn.Server):
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


class ScriptedModelServer:
    """The scripted model on a loopback port, served by uvicorn as a task of the current event loop.

    ``port=0`` binds a free port; ``base_url`` is valid once :meth:`start` has returned.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the scripted model only listens on loopback addresses, not {host!r}")
        self.host = host
        self.port = port
        self._server: _InProcessServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ScriptedModelServer.start() has not been called")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("ScriptedModelServer already started")
        # Binding here, not in uvicorn, tells us the port that port=0 picked before anyone connects.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            create_scripted_model_app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            # A stream still running at stop() (an interrupted slow step) must not hold shutdown for long.
            timeout_graceful_shutdown=1,
        )
        server = _InProcessServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="scripted-model")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._task  # re-raises the startup failure
            raise RuntimeError("the scripted model stopped during startup")

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
            self._server = self._task = self._socket = None

    async def __aenter__(self) -> ScriptedModelServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
