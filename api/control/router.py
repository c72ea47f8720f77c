"""Routes a command to the replica that runs its session: this one directly, any other through the bus."""

from __future__ import annotations

from api.control.commands import Command, encode
from api.runtime.run_manager import CONTROL_CHANNEL, RunManager


class CommandRouter:
    def __init__(self, manager: RunManager) -> None:
        self.manager = manager

    async def send(self, command: Command) -> None:
        """Deliver at most once, best effort: whatever the command changed is in the database already
        (or is not durable by nature), and the owner polls for what is."""
        if await self.manager.deliver_local(command):
            return
        await self.manager.bus.publish(CONTROL_CHANNEL, encode(command))
