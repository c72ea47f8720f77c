"""MCP servers come from the operator's registry, by name: a real stdio server, started by the CLI inside
the sandbox, answers the agent's tool call; names outside the registry or the tenant's rules are refused,
and the tool policy holds for MCP tools as for any other."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.errors import PolicyViolation
from api.runtime.mcp_registry import McpRegistry
from api.runtime.policy import RunRequest, apply_policy
from api.runtime.tool_policy import PolicyBook
from api.scripted_model.server import ScriptedModelServer
from api.settings import Settings
from tests.conftest import Stack, start_stack
from tests.documents import EVENTS, start_ok, start_run, wait_for_run
from tests.support.graphql_http import GraphQLHttpClient

PROBE = Path(__file__).with_name("mcp_probe_server.py")
# A system Python: the sandbox has the host's /usr and nothing of the test's virtualenv.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin")


def write_registry(path: Path) -> Path:
    # The sandbox sees the system's /usr, not the test tree: the server's source goes in as an argument.
    servers = {
        "servers": {
            "probe": {
                "type": "stdio",
                "command": SYSTEM_PYTHON or "python3",
                "args": ["-c", PROBE.read_text()],
            },
            "elsewhere": {"type": "http", "url": "https://mcp.example.com/mcp"},
        }
    }
    path.write_text(json.dumps(servers))
    return path


@pytest.fixture
async def mcp_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tenants": {"tenant-b": {"mcpServers": ["elsewhere"]}}}))
    running = await start_stack(
        "embedded",
        tmp_path / "data",
        scripted_model,
        mcp_servers_file=write_registry(tmp_path / "mcp.json"),
        policy_file=policy,
    )
    try:
        yield running
    finally:
        await running.api.stop()


def echo_call(text: str) -> str:
    steps = [
        {"content": [{"type": "tool_use", "name": "mcp__probe__echo", "input": {"text": text}}]},
        {"content": [{"type": "text", "text": "done"}]},
    ]
    return "[scenario]" + json.dumps({"steps": steps})


async def tool_results(client: GraphQLHttpClient, session_id: str) -> list[dict[str, Any]]:
    events = (await client.execute(EVENTS, {"sessionId": session_id}))["events"]
    return [
        block
        for event in events
        if event["payload"]["__typename"] == "UserMessage"
        for block in event["payload"]["content"]
        if block["__typename"] == "ToolResultBlock"
    ]


@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no python3 under /usr for the MCP server")
async def test_a_registered_stdio_server_answers_the_agents_tool_call(mcp_stack: Stack) -> None:
    text = f"ping {uuid.uuid4()}"
    async with mcp_stack.client() as client:
        started = await start_ok(
            client, prompt=echo_call(text), mcpServers=["probe"], allowedTools=["mcp__probe__echo"]
        )
        run = await wait_for_run(client, started["run"]["id"], timeout=120)
        results = await tool_results(client, started["session"]["id"])
    assert run["status"] == "COMPLETED", run
    assert len(results) == 1, results
    assert not results[0]["isError"]
    assert f"probe says: {text}" in json.dumps(results[0]["content"])


async def test_mcp_tools_follow_the_tool_policy(mcp_stack: Stack) -> None:
    text = f"ping {uuid.uuid4()}"
    async with mcp_stack.client() as client:
        started = await start_ok(
            client, prompt=echo_call(text), mcpServers=["probe"], disallowedTools=["mcp__probe__echo"]
        )
        await wait_for_run(client, started["run"]["id"], timeout=120)
        results = await tool_results(client, started["session"]["id"])
    assert len(results) == 1, results
    assert results[0]["isError"]
    assert "probe says" not in json.dumps(results[0]["content"])


async def test_callers_choose_only_registered_servers_their_tenant_may_use(mcp_stack: Stack) -> None:
    async with mcp_stack.client() as client:
        unknown = await start_run(client, prompt="hi", mcpServers=["probe", "filesystem"])
        sessions = await client.execute("{ sessions { edges { node { id } } } }")
    async with mcp_stack.client(mcp_stack.other_key) as other:
        refused = await start_run(other, prompt="hi", mcpServers=["probe"])
        allowed = await start_run(other, prompt="hi", mcpServers=["elsewhere"])
        # Unreachable from the sandbox (no egress host listed): the run goes on without its tools.
        finished = await wait_for_run(other, allowed["run"]["id"], timeout=120)
        init = [
            event["payload"]["data"]
            for event in (await other.execute(EVENTS, {"sessionId": allowed["session"]["id"]}))["events"]
            if event["payload"]["__typename"] == "SystemMessage" and event["payload"]["subtype"] == "init"
        ]
    assert unknown["__typename"] == "PolicyViolationError", unknown
    assert unknown["rule"] == "mcp_servers"
    assert "filesystem" in unknown["message"]
    assert "registered: elsewhere, probe" in unknown["message"]
    assert sessions["sessions"]["edges"] == []
    assert refused["__typename"] == "PolicyViolationError", refused
    assert refused["rule"] == "tenant tenant-b.mcp_servers"
    assert allowed["__typename"] == "StartRunSuccess", allowed
    assert finished["status"] == "COMPLETED", finished
    assert [(server["name"], server["status"]) for server in init[0]["mcp_servers"]] == [
        ("elsewhere", "failed")
    ]


def test_runs_keep_server_names_only_and_without_a_registry_every_name_is_refused(tmp_path: Path) -> None:
    settings = Settings(mcp_servers_file=write_registry(tmp_path / "mcp.json"))
    options = apply_policy(RunRequest(prompt="hi", mcp_servers=["probe"]), settings)
    assert options.to_json()["mcp_servers"] == ["probe"]
    assert "python3" not in json.dumps(options.to_json())
    with pytest.raises(PolicyViolation, match="not registered"):
        apply_policy(RunRequest(prompt="hi", mcp_servers=["probe"]), Settings())


@pytest.mark.parametrize(
    ("servers", "complaint"),
    [
        ({"a": {"type": "stdio"}}, "command"),
        ({"a": {"command": "x", "cwd": "/"}}, "unknown keys"),
        ({"a": {"type": "http", "url": "file:///etc/passwd"}}, "http"),
        ({"a": {"type": "ws", "url": "https://x"}}, "stdio, http or sse"),
        ({"a__b": {"command": "x"}}, "single _"),
        ({"a": {"command": "x", "env": {"K": 1}}}, "env"),
    ],
)
def test_a_broken_registry_stops_the_start_with_what_is_wrong(
    tmp_path: Path, servers: dict[str, Any], complaint: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"servers": servers}))
    with pytest.raises(ValueError, match=complaint) as failed:
        McpRegistry.load(path)
    assert str(path) in str(failed.value)


def test_a_policy_file_may_name_registered_servers_only(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tenants": {"acme": {"mcpServers": ["nope"]}}}))
    settings = Settings(policy_file=policy, mcp_servers_file=write_registry(tmp_path / "mcp.json"))
    with pytest.raises(ValueError, match="unregistered server"):
        PolicyBook.from_settings(settings)


def test_a_run_whose_server_left_the_registry_is_refused_its_config(tmp_path: Path) -> None:
    registry = McpRegistry.load(write_registry(tmp_path / "mcp.json"))
    assert registry.config_for(("probe",))["probe"]["args"][0] == "-c"
    with pytest.raises(PolicyViolation, match="gone"):
        registry.config_for(("probe", "gone"))
