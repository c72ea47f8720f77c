"""Process helpers: start, health, stop, crash, restart; nothing may outlive a test."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.servers import (
    ApiServer,
    PostgresServer,
    RedisServer,
    ServerStartError,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

FAKE_API = [sys.executable, "-m", "tests.support_selftest.app"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_api_server_start_stop_kill_restart(tmp_path: Path) -> None:
    server = ApiServer(tmp_path, {"SOME_SETTING": "1"}, command=FAKE_API)
    async with server:
        pid = server.pid
        assert pid is not None
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"{server.base_url}/healthz")).status_code == 200
        server.kill()
        assert not _alive(pid)
        await server.start()
        assert server.pid != pid
    assert not server.running
    assert server.log_text().count("=== start:") == 2
    assert server.env["DATA_DIR"] == str(tmp_path / f"data-{server.port}")


async def test_api_server_terminate_then_wait(tmp_path: Path) -> None:
    server = ApiServer(tmp_path, command=FAKE_API)
    await server.start()
    server.terminate()
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the exit is "killed by 15".
    assert await server.wait(timeout=10) in (0, -signal.SIGTERM)
    assert not server.running


async def test_api_server_start_failure_shows_log(tmp_path: Path) -> None:
    server = ApiServer(tmp_path, extra_args=["--fail"], command=FAKE_API)
    with pytest.raises(ServerStartError, match="refusing to start"):
        await server.start(timeout=10)
    assert not server.running


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_private_redis_restarts_on_same_port(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
        redis.stop()
        assert not redis_available(port=redis.port, timeout=0.2)
        redis.start()
        assert redis_available(port=redis.port)
    assert not redis_available(port=redis.port, timeout=0.2)
    with pytest.raises(ValueError, match="6379"):
        RedisServer(tmp_path, port=6379)


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL not reachable on 127.0.0.1:5432")
async def test_postgres_database_lifecycle() -> None:
    url = await create_postgres_database("Selftest-DB")
    name = url.rsplit("/", 1)[1]
    assert name.startswith("selftest_db_")
    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=name)
    try:
        # FORCE must drop it even with this session still open.
        await drop_postgres_database(url)
    finally:
        await conn.close()
    admin = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await admin.close()


@pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL server binaries not installed")
async def test_private_postgres_restarts_on_the_same_port_with_its_data() -> None:
    server = PostgresServer()
    try:
        server.start()
        url = await server.create_database("selftest")
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres", database="selftest")
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
        server.stop()
        # A fast shutdown drops open connections, as a restart does.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await conn.fetchval("SELECT x FROM kept")
        conn.terminate()
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres", timeout=2)
        server.start()
        again = await asyncpg.connect(
            host="127.0.0.1", port=server.port, user="postgres", database="selftest"
        )
        try:
            assert await again.fetchval("SELECT x FROM kept") == 1
        finally:
            await again.close()
        assert url.endswith(f":{server.port}/selftest")
    finally:
        server.close()
    assert not server.work_dir.exists()
    with pytest.raises(ValueError, match="5432"):
        PostgresServer(port=5432)
