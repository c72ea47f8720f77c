"""Run options reach the real CLI: the requests the scripted model receives show each of them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run, workspace_of

pytestmark = pytest.mark.timeout(180)


async def model_requests(model: ScriptedModelServer, marker: str) -> list[dict[str, Any]]:
    """The conversation requests of turns whose prompt contains `marker`, oldest first."""
    async with httpx.AsyncClient() as http:
        records = (await http.get(f"{model.base_url}/_scripted/requests")).json()
    return [r for r in records if r.get("kind") == "conversation" and marker in (r.get("prompt") or "")]


async def run_and_read(
    stack: Stack, scripted: ScriptedModelServer, prompt: str, **options: Any
) -> dict[str, Any]:
    """Run a prompt (made unique) with options; the body of the model request it caused."""
    marker = f"options-{uuid.uuid4()}"
    async with stack.client() as client:
        started = await start_ok(client, prompt=f"{prompt} {marker}", **options)
        run = await wait_for_run(client, started["run"]["id"], timeout=120)
    assert run["status"] == "COMPLETED", run
    requests = await model_requests(scripted, marker)
    assert requests, "the model got no request for the run"
    body: dict[str, Any] = requests[0]["body"]
    return body


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or []
    return system if isinstance(system, str) else "\n".join(block.get("text", "") for block in system)


async def test_model_preset_prompt_thinking_and_effort_reach_the_model(
    stack: Stack, scripted_model: ScriptedModelServer
) -> None:
    appended = f"Always answer in haiku {uuid.uuid4()}."
    body = await run_and_read(
        stack,
        scripted_model,
        "hello",
        model="claude-sonnet-5",
        fallbackModel="claude-haiku-4-5",
        systemPromptPreset={"append": appended},
        thinking={"mode": "ADAPTIVE", "display": "SUMMARIZED"},
        effort="LOW",
    )
    system = system_text(body)
    assert body["model"] == "claude-sonnet-5"
    # Claude Code's own prompt, with the caller's text at its end.
    assert "You are Claude Code" in system
    assert system.rstrip().endswith(appended)
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"]["effort"] == "low"


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"mode": "ENABLED", "budgetTokens": 2048}, {"type": "enabled", "budget_tokens": 2048}),
        ({"mode": "DISABLED"}, {"type": "disabled"}),
    ],
)
async def test_a_thinking_budget_or_none(
    stack: Stack, scripted_model: ScriptedModelServer, thinking: dict[str, Any], expected: dict[str, Any]
) -> None:
    # A budget is for models before adaptive thinking; newer ones treat it as on.
    body = await run_and_read(stack, scripted_model, "hello", model="claude-sonnet-4-5", thinking=thinking)
    assert {key: body["thinking"][key] for key in expected} == expected


async def test_a_text_system_prompt_replaces_claude_codes(
    stack: Stack, scripted_model: ScriptedModelServer
) -> None:
    own = f"You are a terse test agent {uuid.uuid4()}."
    body = await run_and_read(stack, scripted_model, "hello", systemPrompt=own)
    system = system_text(body)
    assert own in system
    assert "You are Claude Code" not in system


@pytest.mark.parametrize("special_stack", [{"agent_env": {"CLAUDE_CODE_MAX_RETRIES": "3"}}], indirect=True)
async def test_an_overloaded_model_falls_back(
    special_stack: Stack, scripted_model: ScriptedModelServer
) -> None:
    marker = f"fallback-{uuid.uuid4()}"
    async with special_stack.client() as client:
        started = await start_ok(
            client,
            prompt=f"[scenario:error:529] {marker}",
            model="claude-sonnet-5",
            fallbackModel="claude-haiku-4-5",
        )
        await wait_for_run(client, started["run"]["id"], timeout=150)
    models = [request["body"]["model"] for request in await model_requests(scripted_model, marker)]
    # The scripted model stays overloaded, so the run fails: after trying the fallback.
    assert models[0] == "claude-sonnet-5"
    assert "claude-haiku-4-5" in models, models


CLAUDE_MD = "Project memory: the answer is {marker}."


async def _memory_seen(stack: Stack, model: ScriptedModelServer) -> bool:
    """Whether a CLAUDE.md in the session's workspace reaches the model, once a new CLI starts."""
    marker = f"memory-{uuid.uuid4()}"
    async with stack.client() as client:
        first = await start_ok(client, prompt="hello")
        session_id = first["session"]["id"]
        await wait_for_run(client, first["run"]["id"], timeout=120)
        (workspace_of(stack.data_dir, session_id) / "CLAUDE.md").write_text(CLAUDE_MD.format(marker=marker))
        # Other options, so a new CLI (which reads settings and memory at its start) resumes the session.
        second = await start_ok(client, prompt=f"again {marker}", sessionId=session_id, maxTurns=7)
        await wait_for_run(client, second["run"]["id"], timeout=120)
    requests = await model_requests(model, marker)
    assert requests
    return any(CLAUDE_MD.format(marker=marker) in json.dumps(r["body"]) for r in requests)


@pytest.mark.parametrize("special_stack", [{"agent_setting_sources": ["project"]}], indirect=True)
async def test_setting_sources_are_the_operators_choice(
    special_stack: Stack, stack: Stack, scripted_model: ScriptedModelServer
) -> None:
    assert await _memory_seen(special_stack, scripted_model)
    # By default nothing in the workspace configures the agent.
    assert not await _memory_seen(stack, scripted_model)
