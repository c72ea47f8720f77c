"""The real SDK and the real bundled CLI against the scripted model: nothing is mocked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from claude_agent_sdk import (
    Message,
    ResultMessage,
    StreamEvent,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from api.scripted_model.server import ScriptedModelServer

from .agents import Agent, connected_agent


def script(*steps: dict[str, Any]) -> str:
    return "[scenario]" + json.dumps({"steps": list(steps)})


def text_step(text: str, **extra: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], **extra}


async def test_echo(agent: Agent) -> None:
    turn = await agent.turn("hello scripted world")
    assert turn.texts == ["You said: hello scripted world"]
    assert turn.result.subtype == "success"
    assert not turn.result.is_error
    assert turn.result.result == "You said: hello scripted world"


async def test_thinking(agent: Agent) -> None:
    turn = await agent.turn("[scenario:thinking] ponder")
    blocks = [b for m in turn.assistants for b in m.content]
    assert isinstance(blocks[0], ThinkingBlock)
    assert blocks[0].signature == "scripted-signature"
    assert turn.texts == ["I thought about it. Here is my answer."]
    assert turn.result.subtype == "success"


async def test_write_file_then_follow_up_turn(agent: Agent) -> None:
    target = agent.cwd / "hello.txt"
    target.unlink(missing_ok=True)
    turn = await agent.turn("[scenario:write-file] please")
    assert target.read_text() == "hello\n"
    tool_uses = [b for m in turn.assistants for b in m.content if isinstance(b, ToolUseBlock)]
    assert [(t.name, t.input["file_path"]) for t in tool_uses] == [("Write", str(target))]
    results = [b for m in turn.messages if isinstance(m, UserMessage) for b in m.content]
    assert any(isinstance(b, ToolResultBlock) and b.tool_use_id == tool_uses[0].id for b in results)
    assert turn.texts == ["Done."]
    assert (turn.result.subtype, turn.result.num_turns) == ("success", 2)

    # A new user text starts a new turn at step 0, whatever came before.
    follow_up = await agent.turn("and now?")
    assert follow_up.texts == ["You said: and now?"]


async def test_two_step_tool_loop(agent: Agent) -> None:
    (agent.cwd / "notes.txt").write_text("remember the milk\n")
    turn = await agent.turn(
        script(
            {
                "content": [
                    {"type": "text", "text": "Reading."},
                    {
                        "type": "tool_use",
                        "name": "Read",
                        "input": {"file_path": str(agent.cwd / "notes.txt")},
                    },
                ]
            },
            {
                "content": [
                    {"type": "tool_use", "name": "Bash", "input": {"command": "echo scripted-$((6*7))"}}
                ]
            },
            text_step("All done."),
        )
    )
    results = [
        b
        for m in turn.messages
        if isinstance(m, UserMessage)
        for b in m.content
        if isinstance(b, ToolResultBlock)
    ]
    assert "remember the milk" in str(results[0].content)
    assert "scripted-42" in str(results[1].content)
    assert turn.texts == ["Reading.", "All done."]
    assert turn.result.num_turns == 3


async def test_past_the_last_step(agent: Agent) -> None:
    turn = await agent.turn(script(text_step("cut short", stop_reason="max_tokens")))
    # The CLI answers max_tokens with a hidden "resume" request: step 1, past the end of this script.
    assert turn.texts == ["cut short", "(scenario finished)"]
    assert turn.result.subtype == "success"


async def test_many_blocks_become_many_messages(agent: Agent) -> None:
    turn = await agent.turn("[scenario:many:1000]")
    assert turn.texts == [f"block {i}" for i in range(1, 1001)]
    assert len(turn.assistants) == 1000
    assert turn.result.subtype == "success"
    print(f"many:1000 took {turn.elapsed:.2f} s")


@pytest.mark.parametrize(
    ("status", "assistant_error"),
    [(529, "server_error"), (429, "rate_limit"), (500, "server_error"), (400, "unknown")],
)
async def test_api_errors_end_the_turn(agent: Agent, status: int, assistant_error: str) -> None:
    turn = await agent.turn(f"[scenario:error:{status}]")
    result = turn.result
    # The CLI keeps subtype "success" and marks the error with is_error and a synthetic assistant text.
    assert result.is_error
    assert result.subtype == "success"
    [message] = turn.assistants
    assert message.model == "<synthetic>"
    assert message.error == assistant_error
    assert f"scripted error {status}" in turn.texts[0]
    print(
        f"error:{status} -> {result.subtype=} {result.api_error_status=} {result.terminal_reason=} "
        f"{message.error=} in {turn.elapsed:.2f} s"
    )
    # The process survives an API error and the next turn works.
    assert (await agent.turn("still there?")).texts == ["You said: still there?"]


async def test_unknown_scenario_reaches_the_client(agent: Agent) -> None:
    turn = await agent.turn("[scenario:no-such-thing]")
    assert turn.result.is_error
    assert "unknown scenario 'no-such-thing'" in turn.texts[0]


async def test_mid_stream_error(agent: Agent) -> None:
    turn = await agent.turn(
        script(
            text_step(
                "one two three four five six seven eight", tokens_per_second=20, stream_error_after_ms=150
            )
        )
    )
    assert turn.result.is_error
    assert "scripted mid-stream overload" in turn.texts[-1]


async def test_a_malformed_stream_fails_the_turn(agent: Agent) -> None:
    turn = await agent.turn("[scenario:malformed]")
    assert turn.result.is_error
    assert "JSON" in turn.texts[-1]


async def test_delay(agent: Agent) -> None:
    turn = await agent.turn(script(text_step("late", delay_ms=700)))
    assert turn.texts == ["late"]
    assert turn.elapsed >= 0.7


async def test_partial_messages_and_pacing(partial_agent: Agent) -> None:
    words = " ".join(f"w{i}" for i in range(10))
    turn = await partial_agent.turn(script(text_step(words, tokens_per_second=10)))
    deltas = [
        e.event["delta"]["text"]
        for e in turn.stream_events
        if e.event.get("type") == "content_block_delta" and e.event["delta"].get("type") == "text_delta"
    ]
    assert "".join(deltas) == words
    assert len(deltas) == 10
    assert turn.elapsed >= 1.0
    assert turn.texts == [words]


async def test_slow_can_be_interrupted(partial_agent: Agent) -> None:
    await partial_agent.client.query("[scenario:slow]")
    seen_delta = asyncio.Event()
    messages: list[Message] = []

    async def drain() -> None:
        async for message in partial_agent.client.receive_response():
            messages.append(message)
            if isinstance(message, StreamEvent) and message.event.get("type") == "content_block_delta":
                seen_delta.set()

    reader = asyncio.create_task(drain())
    async with asyncio.timeout(10):
        await seen_delta.wait()
        await partial_agent.client.interrupt()
        await reader
    result = messages[-1]
    assert isinstance(result, ResultMessage)
    assert result.subtype == "error_during_execution"
    assert result.duration_ms < 2000  # the whole slow text takes ~2.5 s


async def test_concurrent_clients_share_one_stateless_server(agent: Agent, partial_agent: Agent) -> None:
    (agent.cwd / "hello.txt").unlink(missing_ok=True)
    writer, echo = await asyncio.gather(
        agent.turn("[scenario:write-file]"), partial_agent.turn("in parallel")
    )
    assert writer.texts == ["Done."]
    assert (agent.cwd / "hello.txt").exists()
    assert echo.texts == ["You said: in parallel"]


async def test_side_requests_do_not_consume_steps(
    scripted_model: ScriptedModelServer, tmp_path: Path
) -> None:
    requests_url = f"{scripted_model.base_url}/_scripted/requests"
    async with httpx.AsyncClient() as http:
        await http.delete(requests_url)
    # The CLI's default traffic: the connectivity probe and the session-title request come back.
    env = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""}
    async with connected_agent(scripted_model.base_url, tmp_path, env=env) as default_traffic:
        turn = await default_traffic.turn("[scenario:write-file] side calls")
        assert turn.texts == ["Done."]
        assert (default_traffic.cwd / "hello.txt").exists()
    async with httpx.AsyncClient() as http:
        records = (await http.get(requests_url)).json()
    kinds = [(r["kind"], r.get("step")) for r in records]
    assert ("hello", None) in kinds
    assert ("structured_side_query", None) in kinds
    assert [k for k in kinds if k[0] == "conversation"] == [("conversation", 0), ("conversation", 1)]
    assert not [k for k in kinds if k[0] == "unknown"]
