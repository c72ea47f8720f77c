"""Subagents are held to their parent's tool policy: what the run or the operator denies, a subagent
cannot use whatever tools its definition lists, and a call nobody pre-approved asks, as the parent's do."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import Stack
from tests.documents import EVENTS, collect_until_run_ends, start_ok, wait_for_run, watch, workspace_of
from tests.graphql.test_permissions import decide, requested, tool_results
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient

pytestmark = pytest.mark.timeout(180)

WRITER = {"name": "writer", "description": "Writes files.", "prompt": "You write files.", "tools": ["Bash"]}


def delegation(file_name: str) -> str:
    """The main agent hands the `writer` subagent a script that runs Bash to create `file_name`."""
    bash = {"command": f"echo sub > {file_name}", "description": "write a file"}
    sub = {
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": bash}]},
            {"content": [{"type": "text", "text": "subagent done"}]},
        ]
    }
    # In the foreground: a background subagent would outlive the run (and its model pass).
    agent = {
        "description": "write a file",
        "prompt": "[scenario]" + json.dumps(sub),
        "subagent_type": "writer",
        "run_in_background": False,
    }
    steps = [
        {"content": [{"type": "tool_use", "name": "Agent", "input": agent}]},
        {"content": [{"type": "text", "text": "main done"}]},
    ]
    return "[scenario]" + json.dumps({"steps": steps})


async def delegate(
    stack: Stack, client: GraphQLHttpClient, **options: Any
) -> tuple[bool, list[dict[str, Any]]]:
    """Run a delegation; whether the subagent's file exists after it, and the run's tool results."""
    name = f"sub-{uuid.uuid4().hex[:8]}.txt"
    started = await start_ok(client, prompt=delegation(name), agents=[WRITER], **options)
    run = await wait_for_run(client, started["run"]["id"], timeout=120)
    assert run["status"] == "COMPLETED", run
    events = (await client.execute(EVENTS, {"sessionId": started["session"]["id"]}))["events"]
    written = (workspace_of(stack.data_dir, started["session"]["id"]) / name).exists()
    return written, tool_results(events)


async def test_a_subagent_cannot_use_what_its_run_denies(stack: Stack) -> None:
    async with stack.client() as client:
        # The control: pre-approved, the subagent's Bash runs.
        allowed, _ = await delegate(stack, client, allowedTools=["Bash"])
        denied, results = await delegate(stack, client, allowedTools=["Bash"], disallowedTools=["Bash"])
    assert allowed
    assert not denied
    assert any(result["isError"] and "Bash" in json.dumps(result["content"]) for result in results), results


@pytest.mark.parametrize("special_stack", [{"tool_denylist": ["Bash"]}], indirect=True)
async def test_a_subagent_cannot_use_what_the_operator_denies(special_stack: Stack) -> None:
    async with special_stack.client() as client:
        written, results = await delegate(special_stack, client, allowedTools=["Bash"])
    assert not written
    assert any(result["isError"] for result in results), results


async def test_a_subagents_tool_call_asks_like_its_parents(stack: Stack) -> None:
    name = f"sub-{uuid.uuid4().hex[:8]}.txt"
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt=delegation(name), agents=[WRITER])
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        sub = await watch(ws, session_id)
        _, request = await requested(sub)
        pending_file = (workspace_of(stack.data_dir, session_id) / name).exists()
        answer = await decide(client, request["id"], "DENY", message="not from a subagent")
        await collect_until_run_ends(sub, run_id, timeout=120)
    assert request["toolName"] == "Bash"
    assert name in json.dumps(request["input"])
    assert not pending_file
    assert answer["__typename"] == "DecidePermissionSuccess", answer
    assert not (workspace_of(stack.data_dir, session_id) / name).exists()
