"""WARM_POOL_SIZE: connected CLIs, each in its own sandbox and session folders, ready for a tenant's next
new session. A pooled CLI's model pass stays shut until it has a run, it takes its place in the memory
budget, and two sessions from the pool share nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from api.runtime import metrics, warm_pool
from api.runtime.run_manager import RunManager
from api.runtime.sdk_adapter import transcript_path
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, running_stack, start_stack
from tests.documents import collect_until_run_ends, start_ok, wait_for_run, watch, workspace_of
from tests.graphql.test_failures import cli_pids
from tests.graphql.test_permissions import decide, requested, tool_results
from tests.support.graphql_ws import GraphQLWSClient

pytestmark = pytest.mark.timeout(240)


async def until(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """The pool fills in the background, a CLI start at a time (seconds each on a loaded box)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"still not {what} after {timeout} s"
        await asyncio.sleep(0.05)


def pooled_ids(manager: RunManager, tenant_id: str) -> list[str]:
    return [cli.session_id for cli in manager.warm_pool.pooled(tenant_id)]


async def tenant_of(stack: Stack, session_id: str) -> str:
    found = list((stack.data_dir / "tenants").glob(f"*/sessions/{session_id}"))
    assert len(found) == 1, found
    return found[0].parent.parent.name


@pytest.fixture(params=MODES)
async def pooled_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """On PostgreSQL + Redis too: the session's lease is taken in startRun's transaction there."""
    async with running_stack(
        request.param, tmp_path, scripted_model, "caga_warm", warm_pool_size=2, max_live_agents=6
    ) as running:
        yield running


async def test_two_sessions_from_the_pool_share_nothing(pooled_stack: Stack) -> None:
    stack = pooled_stack
    manager = stack.api.services.run_manager
    launcher = manager.launcher
    assert launcher.sandboxed, "the warm pool is tested with the sandbox on"
    used_before = metrics.WARM_POOL_USED._value.get()
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        # The tenant's first new session starts cold and makes the tenant warm here.
        first = await start_ok(client, prompt="[scenario:echo] cold")
        assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
        tenant_id = await tenant_of(stack, first["session"]["id"])
        await until(lambda: len(pooled_ids(manager, tenant_id)) == 2, "two pooled CLIs")
        pooled = manager.warm_pool.pooled(tenant_id)
        # Connected, in their own folders, and unable to reach the model before a run is theirs.
        assert all(cli.launch.grant is not None and not cli.launch.grant.open for cli in pooled)
        assert all(launcher._gateway._valid(cli.launch.grant.token) is None for cli in pooled)  # type: ignore[union-attr]
        assert len({cli.launch.paths.root for cli in pooled}) == 2
        ready = pooled_ids(manager, tenant_id)

        # The second session takes a pooled CLI: its id is the one chosen in advance. It asks to write a
        # file, through the pooled CLI's permission callback, bound to the session's actor now.
        second = await start_ok(client, prompt="[scenario:write-file]")
        second_id = second["session"]["id"]
        assert second_id in ready
        sub = await watch(ws, second_id)
        _, request = await requested(sub)
        assert (await decide(client, request["id"], "ALLOW"))["__typename"] == "DecidePermissionSuccess"
        await collect_until_run_ends(sub, second["run"]["id"])
        secret = workspace_of(stack.data_dir, second_id) / "hello.txt"
        assert secret.read_text() == "hello\n"

        # The third, from the pool too, looks for the second's file and transcript.
        transcript = transcript_path(str(secret.parent.parent / "agent"), str(secret.parent), second_id)
        assert transcript.exists()
        command = f"ls -a .; cat {secret}; cat {transcript}; ls {secret.parent.parent.parent}"
        steps = [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": command}}]},
            {"content": [{"type": "text", "text": "looked"}]},
        ]
        third = await start_ok(client, prompt="[scenario]" + json.dumps({"steps": steps}))
        third_id = third["session"]["id"]
        assert third_id in ready
        assert third_id != second_id
        sub = await watch(ws, third_id)
        _, request = await requested(sub)
        assert (await decide(client, request["id"], "ALLOW"))["__typename"] == "DecidePermissionSuccess"
        events = await collect_until_run_ends(sub, third["run"]["id"])
    assert metrics.WARM_POOL_USED._value.get() - used_before == 2
    output = json.dumps(tool_results(events))
    # Neither the other session's file nor its transcript is there; its tenant folder shows only itself.
    assert f"{secret}: No such file or directory" in output
    assert f"{transcript}: No such file or directory" in output
    assert second_id not in output.replace(str(secret), "").replace(str(transcript), "")
    third_workspace = workspace_of(stack.data_dir, third_id)
    assert list(third_workspace.iterdir()) == []
    third_agent = third_workspace.parent / "agent"
    assert not list(third_agent.glob(f"projects/*/{second_id}.jsonl"))
    # The model saw only the third session's own prompt in its conversation.
    third_transcript = transcript_path(str(third_agent), str(third_workspace), third_id).read_text()
    assert "write-file" not in third_transcript


async def test_the_pool_counts_against_the_budget_and_gives_way_first(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    stack = await start_stack("embedded", tmp_path, scripted_model, warm_pool_size=2, max_live_agents=2)
    manager = stack.api.services.run_manager
    try:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:echo] one")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            tenant_id = await tenant_of(stack, first["session"]["id"])
            # One idle CLI (the first session's) and room for one pooled CLI, not the two asked for.
            await until(lambda: len(pooled_ids(manager, tenant_id)) == 1, "one pooled CLI")
            assert manager.live_agents() == 2
            # /metrics tells a ready pooled CLI from one still starting.
            async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
                gauges = (await http.get("/metrics")).text
            assert 'agent_live_clis{state="warm"} 1.0' in gauges
            assert 'agent_live_clis{state="starting"} 0.0' in gauges
            # A new session on other options cannot use the pooled CLI, and needs room: the pooled CLI
            # gives way before the idle session's.
            other = await start_ok(client, prompt="[scenario:echo] two", maxTurns=3)
            assert other["session"]["id"] not in pooled_ids(manager, tenant_id)
            assert (await wait_for_run(client, other["run"]["id"]))["status"] == "COMPLETED"
            assert first["session"]["id"] in manager._actors
            assert manager.live_agents() <= 2
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            text = (await http.get("/metrics")).text
    finally:
        await stack.api.stop()
    # Stopping the server stops the pool and removes the folders of sessions never made.
    left = {path.name for path in (tmp_path / "tenants" / tenant_id / "sessions").iterdir()}
    assert left == {first["session"]["id"], other["session"]["id"]}
    assert 'agent_live_clis{state="warm"}' in text
    assert 'agent_live_clis{state="starting"}' in text
    assert "agent_memory_budget_bytes" in text


async def test_a_pooled_cli_that_died_is_never_handed_to_a_run(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    stack = await start_stack("embedded", tmp_path, scripted_model, warm_pool_size=1, max_live_agents=4)
    manager = stack.api.services.run_manager
    try:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:echo] one")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            tenant_id = await tenant_of(stack, first["session"]["id"])
            await until(lambda: len(pooled_ids(manager, tenant_id)) == 1, "one pooled CLI")
            dead = manager.warm_pool.pooled(tenant_id)[0]
            pids = cli_pids(dead.session_id)
            assert pids, "the pooled CLI's process was not found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            await until(lambda: not dead.connection.alive, "seen dead", timeout=30)
            second = await start_ok(client, prompt="[scenario:echo] two")
            run = await wait_for_run(client, second["run"]["id"])
    finally:
        await stack.api.stop()
    assert second["session"]["id"] != dead.session_id
    assert run["status"] == "COMPLETED"
    # The dead CLI's folders went with it: no session was ever made of them.
    assert not dead.launch.paths.root.exists()


async def test_the_pool_refills_once_the_first_turn_on_a_pooled_cli_is_over(
    tmp_path: Path, scripted_model: ScriptedModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not during it (a CLI start would take a core from its first answer), and not a fixed while
    later (that landed on the session's follow-ups): as the turn ends, with a hold far longer than it."""
    monkeypatch.setattr(warm_pool, "REFILL_HOLD_SECONDS", 3600.0)
    stack = await start_stack("embedded", tmp_path, scripted_model, warm_pool_size=1, max_live_agents=4)
    manager = stack.api.services.run_manager
    try:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            first = await start_ok(client, prompt="[scenario:echo] cold")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            tenant_id = await tenant_of(stack, first["session"]["id"])
            await until(lambda: len(pooled_ids(manager, tenant_id)) == 1, "one pooled CLI")
            taken = pooled_ids(manager, tenant_id)[0]

            second = await start_ok(client, prompt="[scenario:write-file]")
            assert second["session"]["id"] == taken
            sub = await watch(ws, taken)
            _, request = await requested(sub)
            # Mid-turn, waiting on a person: the pool holds.
            assert manager.warm_pool.live == 0
            assert (await decide(client, request["id"], "ALLOW"))["__typename"] == "DecidePermissionSuccess"
            await collect_until_run_ends(sub, second["run"]["id"])
            await until(lambda: len(pooled_ids(manager, tenant_id)) == 1, "refilled after the turn")
            assert taken not in pooled_ids(manager, tenant_id)
    finally:
        await stack.api.stop()


async def test_a_run_profile_has_a_pool_of_its_own(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    profile = {"size": 1, "permission_mode": "ACCEPT_EDITS", "max_turns": 5}
    stack = await start_stack(
        "embedded", tmp_path, scripted_model, warm_pool_profiles={"editor": profile}, max_live_agents=6
    )
    manager = stack.api.services.run_manager
    try:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:echo] one")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            tenant_id = await tenant_of(stack, first["session"]["id"])
            await until(lambda: manager.warm_pool.ready_for(tenant_id, "editor") == 1, "one editor CLI")
            ready = pooled_ids(manager, tenant_id)
            # The default options have no pool here (WARM_POOL_SIZE=0): that run starts cold.
            plain = await start_ok(client, prompt="[scenario:echo] plain")
            # The profile's options, as a client sends them, take the profile's CLI.
            edit = await start_ok(
                client, prompt="[scenario:write-file]", permissionMode="ACCEPT_EDITS", maxTurns=5
            )
            runs = [await wait_for_run(client, started["run"]["id"]) for started in (plain, edit)]
    finally:
        await stack.api.stop()
    assert ready == [edit["session"]["id"]]
    assert plain["session"]["id"] not in ready
    assert [run["status"] for run in runs] == ["COMPLETED", "COMPLETED"]
    # ACCEPT_EDITS let the write run without asking.
    assert (workspace_of(stack.data_dir, edit["session"]["id"]) / "hello.txt").read_text() == "hello\n"
