"""Helpers for the event bus tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from redis import asyncio as aioredis

from api.events.bus import RESYNC, Resync, Watcher


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.02
) -> float:
    """Poll ``check`` until it is true; returns the seconds it took. Only for states nobody can await."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)
    return loop.time() - start


async def collect(watcher: Watcher, count: int, *, each_within: float = 5.0) -> list[str | Resync]:
    """The next ``count`` items of ``watcher``; fails if one takes longer than ``each_within`` s."""
    items: list[str | Resync] = []
    for _ in range(count):
        item = await watcher.next(timeout=each_within)
        assert item is not None, f"timed out after {items!r}"
        items.append(item)
    return items


async def next_after_resync(watcher: Watcher, *, each_within: float = 5.0) -> None:
    """Skip messages until a RESYNC arrives (fails on timeout)."""
    while True:
        item = await watcher.next(timeout=each_within)
        assert item is not None, "no RESYNC arrived"
        if item is RESYNC:
            return


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except (OSError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()


async def numsub(url: str, channel: str) -> int:
    """How many connections the Redis server has subscribed to ``channel``."""
    client = aioredis.Redis.from_url(url)
    try:
        [(_name, count)] = await client.pubsub_numsub(channel)
        return int(count)
    finally:
        await client.aclose()


class RedisServer:
    """A private redis-server on a loopback port, which a test may stop and restart."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert self._proc is None, "already running"
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(lambda: redis_answers(self.url), within=5.0)

    async def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
