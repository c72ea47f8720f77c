"""The real API app served by uvicorn on a loopback port, as a task of the test's event loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from api.app import create_app
from api.services import Services
from api.settings import Settings
from api.uvicorn_task import UvicornTask
from api.ws_protocol import protocol_class


class InProcessApi:
    """create_app(settings) on a free port: real HTTP, real WebSockets, one process."""

    def __init__(self, settings: Settings, *, agent_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.app = create_app(settings, agent_env=agent_env)
        self._uvicorn = UvicornTask(
            self.app,
            name="api",
            log_config=None,
            access_log=False,
            lifespan="on",
            ws_max_size=1 << 20,
            ws=protocol_class(shared_compression=settings.ws_shared_compression),  # as `serve` does
        )

    @property
    def port(self) -> int:
        return self._uvicorn.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def services(self) -> Services:
        return cast(Services, self.app.state.services)

    async def start(self) -> None:
        await self._uvicorn.start()

    async def stop(self) -> None:
        await self._uvicorn.stop()
