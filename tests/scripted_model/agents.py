"""Real Claude SDK clients pointed at the scripted model, and what a turn produced."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    Message,
    ResultMessage,
    StreamEvent,
    TextBlock,
)

from api.scripted_model.server import scripted_model_cli_env

TURN_TIMEOUT_S = 60


@dataclass
class Agent:
    """A connected client, its workspace, and the CLI's stderr (the only place some failures show)."""

    client: ClaudeSDKClient
    cwd: Path
    stderr: list[str] = field(default_factory=list)

    async def turn(self, prompt: str) -> Turn:
        start = time.monotonic()
        await self.client.query(prompt)
        messages: list[Message] = []
        async with asyncio.timeout(TURN_TIMEOUT_S):
            async for message in self.client.receive_response():
                messages.append(message)
        return Turn(messages, time.monotonic() - start)


@dataclass
class Turn:
    """Every message of one turn, up to and including its ResultMessage, and how long it took."""

    messages: list[Message]
    elapsed: float

    @property
    def result(self) -> ResultMessage:
        last = self.messages[-1]
        assert isinstance(last, ResultMessage), last
        return last

    @property
    def assistants(self) -> list[AssistantMessage]:
        return [m for m in self.messages if isinstance(m, AssistantMessage)]

    @property
    def texts(self) -> list[str]:
        return [b.text for m in self.assistants for b in m.content if isinstance(b, TextBlock)]

    @property
    def stream_events(self) -> list[StreamEvent]:
        return [m for m in self.messages if isinstance(m, StreamEvent)]


def agent_options(base_url: str, root: Path, stderr: list[str], **overrides: Any) -> ClaudeAgentOptions:
    cwd = root / "workspace"
    cwd.mkdir(parents=True, exist_ok=True)
    env = scripted_model_cli_env(base_url) | {
        "ANTHROPIC_API_KEY": "test-key",
        "CLAUDE_CONFIG_DIR": str(root / "claude"),
        # Error scenarios must end the turn at once: the default is 10 retries backing off 0.5 s to 32 s.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    env |= overrides.pop("env", {})
    options: dict[str, Any] = {"permission_mode": "acceptEdits", "max_turns": 6} | overrides
    return ClaudeAgentOptions(cwd=cwd, env=env, stderr=stderr.append, **options)


@contextlib.asynccontextmanager
async def connected_agent(base_url: str, root: Path, **overrides: Any) -> AsyncIterator[Agent]:
    """A connected client whose workspace is ``root/workspace``; ``overrides`` go to the options."""
    stderr: list[str] = []
    options = agent_options(base_url, root, stderr, **overrides)
    assert options.cwd is not None
    async with ClaudeSDKClient(options) as client:
        yield Agent(client, Path(options.cwd), stderr)
