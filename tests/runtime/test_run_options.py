"""Run options reach the real CLI: what the scripted model receives shows them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run


async def model_requests(model: ScriptedModelServer, marker: str) -> list[dict[str, Any]]:
    """The conversation requests of the turn whose prompt contains `marker`."""
    async with httpx.AsyncClient() as http:
        records = (await http.get(f"{model.base_url}/_scripted/requests")).json()
    return [r for r in records if r.get("kind") == "conversation" and marker in (r.get("prompt") or "")]


import pytest
@pytest.mark.parametrize("variant", [
  dict(model="claude-sonnet-5", thinking={"mode": "DISABLED"}, effort="LOW"),
  dict(model="claude-sonnet-5", thinking={"mode": "ADAPTIVE", "display": "SUMMARIZED"}),
  dict(model="claude-sonnet-4-5", thinking={"mode": "ENABLED", "budgetTokens": 2048}),
  dict(model="claude-3-7-sonnet-20250219", thinking={"mode": "ENABLED", "budgetTokens": 3000}, effort="MAX"),
])
async def test_explore2(stack: Stack, scripted_model: ScriptedModelServer, variant) -> None:
    marker = f"options-{uuid.uuid4()}"
    async with stack.client() as client:
        started = await start_ok(client, prompt=f"hello {marker}", **variant)
        await wait_for_run(client, started["run"]["id"], timeout=120)
    for r in await model_requests(scripted_model, marker):
        print(variant, r["body"].get("model"), r["body"].get("thinking"), r["body"].get("output_config"), r["body"].get("max_tokens"))


@pytest.mark.parametrize("special_stack", [{"agent_env": {"CLAUDE_CODE_MAX_RETRIES": "5"}}], indirect=True)
async def test_explore3(special_stack: Stack, scripted_model: ScriptedModelServer) -> None:
    stack = special_stack
    marker = f"options-{uuid.uuid4()}"
    async with stack.client() as client:
        started = await start_ok(client, prompt=f"[scenario:error:529] {marker}", model="claude-sonnet-5", fallbackModel="claude-haiku-4-5")
        run = await wait_for_run(client, started["run"]["id"], timeout=120)
    print(run)
    for r in await model_requests(scripted_model, marker):
        print(r["body"].get("model"), r.get("step"))


async def test_explore(stack: Stack, scripted_model: ScriptedModelServer) -> None:
    marker = f"options-{uuid.uuid4()}"
    async with stack.client() as client:
        started = await start_ok(
            client,
            prompt=f"hello {marker}",
            model="claude-sonnet-5",
            fallbackModel="claude-haiku-4-5",
            systemPromptPreset={"append": f"APPENDED {marker}"},
            thinking={"mode": "ENABLED", "budgetTokens": 2048},
            effort="HIGH",
        )
        run = await wait_for_run(client, started["run"]["id"], timeout=120)
    import json
    print(json.dumps(run))
    for r in await model_requests(scripted_model, marker):
        body = dict(r["body"])
        body["messages"] = "..."
        body["tools"] = [t.get("name") for t in body.get("tools") or []]
        body["system"] = [s["text"][-300:] for s in body["system"]]; print(json.dumps(body, indent=1))
