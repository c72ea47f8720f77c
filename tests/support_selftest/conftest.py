"""An in-process uvicorn serving the self-test app, shared by this package's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn

from tests.support.servers import free_port
from tests.support_selftest.app import create_app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # pytest owns SIGINT/SIGTERM; an embedded server must not take them over.
        yield


@pytest.fixture(scope="package")
async def app_url() -> AsyncIterator[str]:
    """Base URL (``http://127.0.0.1:P``) of the self-test app."""
    port = free_port()
    server = _Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    if not server.started:
        task.cancel()
        pytest.fail("self-test app did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


@pytest.fixture
def ws_url(app_url: str) -> str:
    return app_url.replace("http://", "ws://") + "/graphql"
