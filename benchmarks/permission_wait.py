"""How long may a can_use_tool callback wait and still be honoured by the CLI?

`.venv/bin/python -m benchmarks.permission_wait SECONDS`: the real SDK and CLI against the scripted model;
the agent asks to Write a file, the callback waits SECONDS and allows, and the script reports whether the
file was written. PERMISSION_TIMEOUT_SECONDS may not exceed the longest wait shown to work (900 s on SDK
0.2.188 / CLI 2.1.331; 330 s too).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    PermissionResultAllow,
    ResultMessage,
    ToolPermissionContext,
    UserMessage,
)

from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env


async def measure(wait: float) -> bool:
    async with ScriptedModelServer() as server:
        workspace = Path(tempfile.mkdtemp(prefix="permission-wait-"))
        config = Path(tempfile.mkdtemp(prefix="permission-wait-config-"))

        async def can_use_tool(
            tool: str, tool_input: dict[str, Any], context: ToolPermissionContext
        ) -> PermissionResultAllow:
            print(f"[{time.strftime('%X')}] asked for {tool}; waiting {wait:g} s", flush=True)
            await asyncio.sleep(wait)
            return PermissionResultAllow()

        options = ClaudeAgentOptions(
            cwd=str(workspace),
            env={**scripted_model_cli_env(server.base_url), "CLAUDE_CONFIG_DIR": str(config)},
            can_use_tool=can_use_tool,
            setting_sources=[],
        )
        async with ClaudeSDKClient(options) as client:

            async def prompt() -> Any:
                yield {
                    "type": "user",
                    "message": {"role": "user", "content": "[scenario:write-file]"},
                    "parent_tool_use_id": None,
                }

            await client.query(prompt())
            async for message in client.receive_messages():
                if isinstance(message, UserMessage):
                    print(f"[{time.strftime('%X')}] tool result: {str(message.content)[:200]}", flush=True)
                if isinstance(message, ResultMessage):
                    break
        written = (workspace / "hello.txt").exists()
        print(f"waited {wait:g} s: file written: {written}", flush=True)
        return written


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)) else 1)
