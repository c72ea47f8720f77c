"""Routes a command to the replica that runs its session: this one directly, any other through the bus."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from api.control.commands import Command, Request, message_of
from api.events.bus import Resync
from api.runtime.run_manager import RunManager


class CommandRouter:
    def __init__(self, manager: RunManager) -> None:
        self.manager = manager

    async def send(self, command: Command) -> None:
        """Deliver at most once, best effort: whatever the command changed is in the database already
        (or is not durable by nature), and the owner polls for what is."""
        if await self.manager.deliver_local(command):
            return
        await self.manager.control.publish(message_of(command))

    async def ask(self, command: Request, timeout: float) -> dict[str, Any] | None:
        """Send a command that answers on its `reply_to` channel; None when no answer came in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.manager.bus.watch(command.reply_to) as watcher:
            await self.send(command)
            while (remaining := deadline - loop.time()) > 0:
                item = await watcher.next(timeout=remaining)
                if item is None:
                    break
                if not isinstance(item, Resync):
                    answer: dict[str, Any] = orjson.loads(item)
                    return answer
        return None
