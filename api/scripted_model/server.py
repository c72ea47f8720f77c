"""Running the scripted model in-process, and the CLI environment that points at it."""

from __future__ import annotations

import ipaddress
from types import TracebackType

from api.scripted_model.app import create_scripted_model_app
from api.uvicorn_task import UvicornTask


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


class ScriptedModelServer:
    """The scripted model on a loopback port, served by uvicorn as a task of the current event loop.

    ``port=0`` binds a free port; ``base_url`` is valid once :meth:`start` has returned.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the scripted model only listens on loopback addresses, not {host!r}")
        self.host = host
        self._uvicorn = UvicornTask(
            create_scripted_model_app(),
            host=host,
            port=port,
            name="scripted-model",
            log_level="warning",
            access_log=False,
            lifespan="off",
            # A stream still running at stop() (an interrupted slow step) must not hold shutdown for long.
            timeout_graceful_shutdown=1,
        )

    @property
    def port(self) -> int:
        return self._uvicorn.port

    @property
    def base_url(self) -> str:
        if not self._uvicorn.started:
            raise RuntimeError("ScriptedModelServer.start() has not been called")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await self._uvicorn.start()

    async def stop(self) -> None:
        await self._uvicorn.stop()

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
