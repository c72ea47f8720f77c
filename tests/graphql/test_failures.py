"""When the model, the key or the CLI fails, the run ends FAILED with the reason; the server goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.documents import (
    INTERRUPT_RUN,
    SESSION,
    collect_until_run_ends,
    run_status,
    start_ok,
    texts,
    until_no_runs_executing,
    wait_for_run,
    watch,
)
from tests.support.cluster import paced_scenario
from tests.support.graphql_ws import GraphQLWSClient
from tests.support.leases import take_over


def cli_pids(session_id: str) -> list[int]:
    """The agent CLI processes started for a session (their command line names its id)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(session_id.encode() in part for part in cmdline) and any(
            b"claude" in part for part in cmdline[:2]
        ):
            pids.append(int(entry.name))
    return pids


class TestModelFailures:
    @pytest.mark.parametrize("status", [529, 429, 500, 400])
    async def test_a_failing_model_fails_the_run_with_the_status_and_the_session_goes_on(
        self, stack: Stack, status: int
    ) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt=f"[scenario:error:{status}]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            events = await collect_until_run_ends(sub, run_id)
            failed = await wait_for_run(client, run_id)

            again = await start_ok(client, prompt="are you back?", sessionId=session_id)
            recovered = await collect_until_run_ends(sub, again["run"]["id"])
        assert failed["status"] == "FAILED"
        assert f"model API status {status}" in failed["error"]
        assert events[-1]["payload"]["error"] == failed["error"]
        assert run_status(recovered, again["run"]["id"]) == ["QUEUED", "RUNNING", "COMPLETED"]
        assert texts(recovered)[-1] == "You said: are you back?"


class TestCliFailures:
    async def test_a_cli_killed_mid_run_fails_the_run_and_the_next_turn_resumes(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:slow]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            # Wait until the agent is demonstrably mid-run (its init message is in the log).
            while True:
                event = (await sub.next(timeout=30))["data"]["sessionEvents"]
                if event["payload"]["__typename"] == "SystemMessage":
                    break
            pids = cli_pids(session_id)
            assert pids, "the agent CLI process was not found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            rest = await collect_until_run_ends(sub, run_id)
            failed = await wait_for_run(client, run_id)

            again = await start_ok(client, prompt="still there?", sessionId=session_id)
            recovered = await collect_until_run_ends(sub, again["run"]["id"])
        assert run_status(rest, run_id)[-1] == "FAILED"
        assert failed["status"] == "FAILED"
        # Named for what happened, not the SDK's "Command failed … Check stderr output for details".
        assert "the agent CLI" in failed["error"], failed["error"]
        assert "Check stderr output" not in failed["error"]
        assert texts(recovered)[-1] == "You said: still there?"


class TestInterrupt:
    async def test_interrupting_a_running_run_stops_it_and_the_session_continues(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:slow]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id, partial=True)
            while True:  # a token delta proves the model is streaming
                if (await sub.next(timeout=30))["data"]["sessionEvents"]["ephemeral"]:
                    break
            answer = (await client.execute(INTERRUPT_RUN, {"runId": run_id}))["interruptRun"]
            events = await collect_until_run_ends(sub, run_id, timeout=30)
            again = (await client.execute(INTERRUPT_RUN, {"runId": run_id}))["interruptRun"]
            follow = await start_ok(client, prompt="carry on", sessionId=session_id)
            done = await wait_for_run(client, follow["run"]["id"])
        assert answer["__typename"] == "InterruptRunSuccess"
        assert answer["outcome"] == "INTERRUPTED"
        assert run_status(events, run_id)[-1] == "INTERRUPTED"
        result = next(e["payload"] for e in events if e["payload"]["__typename"] == "ResultMessage")
        assert result["terminalReason"] in {"aborted_streaming", "aborted_tools"}
        assert again["outcome"] == "ALREADY_FINISHED"
        assert done["status"] == "COMPLETED"

    async def test_interrupting_a_queued_run_aborts_it(self, stack: Stack) -> None:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:slow]")
            queued = await start_ok(client, prompt="never", sessionId=first["session"]["id"])
            answer = (await client.execute(INTERRUPT_RUN, {"runId": queued["run"]["id"]}))["interruptRun"]
            await wait_for_run(client, first["run"]["id"])
            session = (await client.execute(SESSION, {"id": first["session"]["id"]}))["session"]
        assert answer["outcome"] == "ABORTED"
        assert answer["run"]["status"] == "INTERRUPTED"
        runs = {edge["node"]["id"]: edge["node"] for edge in session["runs"]["edges"]}
        assert runs[queued["run"]["id"]]["status"] == "INTERRUPTED"
        assert runs[queued["run"]["id"]]["startedAt"] is None


@pytest.mark.parametrize("special_stack", [{"agent_env": {"ANTHROPIC_API_KEY": ""}}], indirect=True)
async def test_a_missing_anthropic_key_fails_the_run_with_the_reason(special_stack: Stack) -> None:
    async with special_stack.client() as client:
        started = await start_ok(client, prompt="hello?")
        failed = await wait_for_run(client, started["run"]["id"])
        healthy = await client.execute("{ sessions { edges { node { id } } } }")
    assert failed["status"] == "FAILED"
    assert "login" in failed["error"].lower() or "api key" in failed["error"].lower()
    assert healthy["sessions"]["edges"]


@pytest.mark.parametrize("special_stack", [{"run_timeout_seconds": 1.0}], indirect=True)
async def test_a_run_past_its_time_limit_fails(special_stack: Stack) -> None:
    async with special_stack.client() as client:
        started = await start_ok(client, prompt="[scenario:slow]")
        failed = await wait_for_run(client, started["run"]["id"])
    assert failed["status"] == "FAILED"
    assert failed["error"] == "the run exceeded its time limit"


@pytest.mark.parametrize("special_stack", [{"max_concurrent_runs": 1}], indirect=True)
async def test_runs_beyond_the_replica_bound_wait_queued(special_stack: Stack) -> None:
    async with (
        special_stack.client() as client,
        GraphQLWSClient.connect(special_stack.api.ws_url, token=special_stack.key) as ws,
    ):
        first = await start_ok(client, prompt="[scenario:slow]")
        second = await start_ok(client, prompt="me too")
        sub_first = await watch(ws, first["session"]["id"])
        sub_second = await watch(ws, second["session"]["id"])
        first_events = await collect_until_run_ends(sub_first, first["run"]["id"])
        second_events = await collect_until_run_ends(sub_second, second["run"]["id"])
    first_done = next(e for e in first_events if e["payload"].get("status") == "COMPLETED")["createdAt"]
    second_running = next(e for e in second_events if e["payload"].get("status") == "RUNNING")["createdAt"]
    assert second_running >= first_done


async def test_the_agent_never_sees_the_servers_secrets(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_SECRET_FOR_TEST", "hunter2-do-not-leak")
    scenario = {
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "env"}}]},
            {"content": [{"type": "text", "text": "listed"}]},
        ]
    }
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt="[scenario]" + json.dumps(scenario), allowedTools=["Bash"])
        sub = await watch(ws, started["session"]["id"])
        events = await collect_until_run_ends(sub, started["run"]["id"])
    outputs = [
        json.dumps(block["content"])
        for e in events
        if e["payload"]["__typename"] == "UserMessage"
        for block in e["payload"]["content"]
        if block["__typename"] == "ToolResultBlock"
    ]
    assert outputs, "the Bash tool did not run"
    listing = outputs[0]
    assert "PATH=" in listing
    assert "hunter2-do-not-leak" not in listing
    assert "CLAUDE_CONFIG_DIR=" in listing
    if stack.mode == "postgres":
        assert "postgresql" not in listing


@pytest.mark.parametrize("special_stack", [{"lease_seconds": 3.0, "lease_renew_seconds": 1.0}], indirect=True)
async def test_a_replica_that_loses_its_lease_stops_the_cli_at_once(special_stack: Stack) -> None:
    async with (
        special_stack.client() as client,
        GraphQLWSClient.connect(special_stack.api.ws_url, token=special_stack.key) as ws,
    ):
        # Long enough (about 10 s) that the 1 s lease beat notices well before the run would end.
        started = await start_ok(client, prompt=paced_scenario(steps=50, delay_ms=200))
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        sub = await watch(ws, session_id)
        while (await sub.next(timeout=30))["data"]["sessionEvents"]["payload"][
            "__typename"
        ] != "SystemMessage":
            pass
        # Another replica took the lease (as after a long database outage on this one).
        await take_over(special_stack.api.services.db, session_id)
        failed = await wait_for_run(client, run_id, timeout=30)
    assert failed["status"] == "FAILED"
    assert "lost the session's lease" in failed["error"]
    assert cli_pids(session_id) == []


@pytest.mark.parametrize("special_stack", [{"idle_client_seconds": 2.0}], indirect=True)
async def test_an_idle_sessions_cli_is_stopped_and_the_next_turn_resumes(special_stack: Stack) -> None:
    async with special_stack.client() as client:
        first = await start_ok(client, prompt="remember the number 7")
        session_id = first["session"]["id"]
        await wait_for_run(client, first["run"]["id"])
        assert cli_pids(session_id), "the session's CLI should stay up between turns"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while cli_pids(session_id):
            assert loop.time() < deadline, "the idle CLI was never stopped"
            await asyncio.sleep(0.1)
        second = await start_ok(client, prompt="what was the number?", sessionId=session_id)
        done = await wait_for_run(client, second["run"]["id"])
    assert done["status"] == "COMPLETED"
    await until_no_runs_executing(special_stack.api.services.run_manager)


@pytest.mark.parametrize("special_stack", [{"interrupt_wait_seconds": 90.0}], indirect=True)
async def test_a_cli_that_ignores_the_interrupt_is_stopped_and_reads_aborted(special_stack: Stack) -> None:
    stack = special_stack
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt="[scenario:slow]")
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        sub = await watch(ws, session_id, partial=True)
        while not (await sub.next(timeout=30))["data"]["sessionEvents"]["ephemeral"]:
            pass
        pids = cli_pids(session_id)
        assert pids, "the agent CLI process was not found"
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # alive, and deaf to the interrupt
            answer = (await client.execute(INTERRUPT_RUN, {"runId": run_id}))["interruptRun"]
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        follow = await start_ok(client, prompt="back again", sessionId=session_id)
        done = await wait_for_run(client, follow["run"]["id"])
    assert answer["outcome"] == "ABORTED"
    assert answer["run"]["status"] == "INTERRUPTED"
    assert "its CLI was stopped" in answer["run"]["error"]
    assert done["status"] == "COMPLETED"
