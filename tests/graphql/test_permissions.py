"""Human in the loop: a tool call waits for a person's decision, on the real CLI and both storage modes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from api.scripted_model.server import ScriptedModelServer
from persistence.database import Database
from persistence.repositories.permissions import PermissionRepository
from tests.conftest import Stack, start_stack
from tests.documents import (
    INTERRUPT_RUN,
    PERMISSION_REQUEST_FIELDS,
    collect_until_run_ends,
    run_status,
    start_ok,
    wait_for_run,
    watch,
    workspace_of,
)
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient, Subscription
from tests.support.leases import take_over

pytestmark = pytest.mark.timeout(180)

DECIDE = (
    """
mutation Decide($input: DecidePermissionInput!) {
  decidePermission(input: $input) {
    __typename
    ... on DecidePermissionSuccess { request { ...PermissionRequestFields } }
    ... on Error { code message }
    ... on PermissionAlreadyDecidedError { requestId status }
    ... on NotFoundError { resource resourceId }
    ... on ValidationError { field }
  }
}
"""
    + PERMISSION_REQUEST_FIELDS
)

ANSWER = (
    """
mutation Answer($input: AnswerQuestionInput!) {
  answerQuestion(input: $input) {
    __typename
    ... on DecidePermissionSuccess { request { ...PermissionRequestFields } }
    ... on Error { code message }
  }
}
"""
    + PERMISSION_REQUEST_FIELDS
)

REQUESTS = (
    """
query Requests($sessionId: ID, $status: PermissionRequestStatus) {
  permissionRequests(sessionId: $sessionId, status: $status) { ...PermissionRequestFields }
}
"""
    + PERMISSION_REQUEST_FIELDS
)

SET_MODEL = """
mutation SetModel($sessionId: ID!, $model: String) {
  setModel(sessionId: $sessionId, model: $model) {
    __typename
    ... on LiveControlSuccess { session { id } }
    ... on Error { code message }
  }
}
"""

SET_MODE = """
mutation SetMode($sessionId: ID!, $mode: PermissionMode!) {
  setPermissionMode(sessionId: $sessionId, mode: $mode) {
    __typename
    ... on LiveControlSuccess { session { id } }
    ... on Error { code message }
    ... on PolicyViolationError { rule }
  }
}
"""

AUDIT = """
query Audit($action: String) {
  auditLog(filter: {action: $action}, first: 50) { edges { node { action targetType targetId details } } }
}
"""

QUESTION = {
    "questions": [
        {
            "question": "Which color should the file be?",
            "header": "Color",
            "options": [
                {"label": "Red", "description": "warm"},
                {"label": "Blue", "description": "cool"},
            ],
            "multiSelect": False,
        }
    ]
}


def scripted(*steps: dict[str, Any]) -> str:
    return "[scenario]" + json.dumps({"steps": list(steps)})


def tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "tool_use", "name": name, "input": tool_input}]}


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


async def until_event(
    sub: Subscription, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events up to and including the first one the predicate accepts."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        payload = await sub.next(timeout=max(0.1, deadline - loop.time()))
        assert not payload.get("errors"), payload
        event = payload["data"]["sessionEvents"]
        seen.append(event)
        if predicate(event):
            return seen, event


def is_kind(typename: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["payload"]["__typename"] == typename)


async def requested(sub: Subscription) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events until the first PermissionRequested, and its request."""
    events, event = await until_event(sub, is_kind("PermissionRequested"))
    return events, event["payload"]["request"]


def tool_results(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for e in events
        if e["payload"]["__typename"] == "UserMessage"
        for block in e["payload"]["content"]
        if block["__typename"] == "ToolResultBlock"
    ]


def decided(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["payload"]["request"] for e in events if e["payload"]["__typename"] == "PermissionDecided"]


async def decide(client: GraphQLHttpClient, request_id: str, decision: str, **fields: Any) -> dict[str, Any]:
    data = await client.execute(DECIDE, {"input": {"requestId": request_id, "decision": decision, **fields}})
    result: dict[str, Any] = data["decidePermission"]
    return result


def workspace(stack: Stack, session_id: str) -> Path:
    return workspace_of(stack.data_dir, session_id)


class TestAllow:
    async def test_a_write_waits_for_permission_and_runs_once_allowed(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            before, request = await requested(sub)

            # Nothing ran yet, and a watcher finds the request among the pending ones.
            assert not (workspace(stack, session_id) / "hello.txt").exists()
            pending = (await client.execute(REQUESTS, {"sessionId": session_id, "status": "PENDING"}))[
                "permissionRequests"
            ]
            everywhere = (await client.execute(REQUESTS, {"status": "PENDING"}))["permissionRequests"]
            answer = await decide(client, request["id"], "ALLOW")
            after = await collect_until_run_ends(sub, run_id)
            again = await decide(client, request["id"], "DENY", message="too late")
            audit = (await client.execute(AUDIT, {"action": "permission.decide"}))["auditLog"]["edges"]

        assert (workspace(stack, session_id) / "hello.txt").read_text() == "hello\n"
        assert request["toolName"] == "Write"
        assert request["status"] == "PENDING"
        assert request["runId"] == run_id
        assert request["input"]["content"] == "hello\n"
        assert request["expiresAt"] > request["createdAt"]
        tool_use_ids = [
            block["id"]
            for e in before
            if e["payload"]["__typename"] == "AssistantMessage"
            for block in e["payload"]["content"]
            if block["__typename"] == "ToolUseBlock"
        ]
        # The assistant message that asked for the tool is in the log before the request.
        assert tool_use_ids == [request["toolUseId"]]
        assert [r["id"] for r in pending] == [request["id"]]
        assert request["id"] in [r["id"] for r in everywhere]
        assert answer["__typename"] == "DecidePermissionSuccess", answer
        assert answer["request"]["status"] == "ALLOWED"
        assert answer["request"]["decidedBy"].startswith("key:")
        assert [d["status"] for d in decided(after)] == ["ALLOWED"]
        results = tool_results(after)
        assert [r["toolUseId"] for r in results] == [request["toolUseId"]]
        assert not results[0]["isError"]
        assert run_status(after, run_id)[-1] == "COMPLETED"
        assert again["__typename"] == "PermissionAlreadyDecidedError"
        assert again["status"] == "ALLOWED"
        assert again["code"] == "PERMISSION_ALREADY_DECIDED"
        entry = next(edge["node"] for edge in audit if edge["node"]["targetId"] == request["id"])
        assert entry["details"]["decision"] == "ALLOW"
        assert entry["details"]["toolName"] == "Write"

    async def test_allowing_with_an_updated_input_runs_that_input(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id = started["session"]["id"]
            sub = await watch(ws, session_id)
            _, request = await requested(sub)
            changed = {**request["input"], "content": "changed by a person\n"}
            answer = await decide(client, request["id"], "ALLOW", updatedInput=changed)
            await collect_until_run_ends(sub, started["run"]["id"])
        assert answer["request"]["updatedInput"] == changed
        assert (workspace(stack, session_id) / "hello.txt").read_text() == "changed by a person\n"

    async def test_allow_for_session_lets_the_next_call_of_that_tool_run_without_asking(
        self, stack: Stack
    ) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id = started["session"]["id"]
            sub = await watch(ws, session_id)
            _, request = await requested(sub)
            await decide(client, request["id"], "ALLOW", allowForSession=True)
            await collect_until_run_ends(sub, started["run"]["id"])
            target = workspace(stack, session_id) / "second.txt"
            path = str(target)
            second = await start_ok(
                client,
                sessionId=session_id,
                prompt=scripted(tool_use("Write", {"file_path": path, "content": "2\n"}), text("ok")),
            )
            events = await collect_until_run_ends(sub, second["run"]["id"])
        assert not any(e["payload"]["__typename"] == "PermissionRequested" for e in events)
        assert target.read_text() == "2\n"


class TestDeny:
    async def test_a_denied_write_never_runs_and_the_model_gets_the_message(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            _, request = await requested(sub)
            answer = await decide(client, request["id"], "DENY", message="Not in this folder, please.")
            after = await collect_until_run_ends(sub, run_id)
        assert answer["request"]["status"] == "DENIED"
        assert not (workspace(stack, session_id) / "hello.txt").exists()
        results = tool_results(after)
        assert len(results) == 1
        assert results[0]["isError"] is True
        assert "Not in this folder, please." in json.dumps(results[0]["content"])
        assert [d["status"] for d in decided(after)] == ["DENIED"]
        assert run_status(after, run_id)[-1] == "COMPLETED"

    async def test_bad_decisions_are_typed_errors(self, stack: Stack) -> None:
        async with (
            stack.client() as client,
            stack.client(stack.other_key) as theirs,
            GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws,
        ):
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id = started["session"]["id"]
            sub = await watch(ws, session_id)
            _, request = await requested(sub)
            foreign = await decide(theirs, request["id"], "ALLOW")
            foreign_list = (await theirs.execute(REQUESTS, {"sessionId": session_id}))["permissionRequests"]
            foreign_all = (await theirs.execute(REQUESTS, {}))["permissionRequests"]
            bad_input = await decide(client, request["id"], "ALLOW", updatedInput=[1, 2])
            deny_with_input = await decide(client, request["id"], "DENY", updatedInput={"a": 1})
            not_a_question = (
                await client.execute(ANSWER, {"input": {"requestId": request["id"], "answers": {"q": "a"}}})
            )["answerQuestion"]
            await decide(client, request["id"], "DENY")
            await collect_until_run_ends(sub, started["run"]["id"])
        assert foreign["__typename"] == "NotFoundError"
        assert foreign_list == []
        assert request["id"] not in [r["id"] for r in foreign_all]
        assert bad_input["__typename"] == "ValidationError"
        assert bad_input["field"] == "updatedInput"
        assert deny_with_input["__typename"] == "ValidationError"
        assert not_a_question["__typename"] == "ValidationError"


class TestQuestions:
    async def test_an_answered_question_reaches_the_model(self, stack: Stack) -> None:
        prompt = scripted(tool_use("AskUserQuestion", QUESTION), text("Blue it is."))
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt=prompt)
            sub = await watch(ws, started["session"]["id"])
            _, request = await requested(sub)
            answers = {"Which color should the file be?": "Blue"}
            answer = (
                await client.execute(ANSWER, {"input": {"requestId": request["id"], "answers": answers}})
            )["answerQuestion"]
            after = await collect_until_run_ends(sub, started["run"]["id"])
        assert request["toolName"] == "AskUserQuestion"
        assert request["input"]["questions"] == QUESTION["questions"]
        assert answer["__typename"] == "DecidePermissionSuccess", answer
        assert answer["request"]["updatedInput"] == {**QUESTION, "answers": answers}
        results = tool_results(after)
        assert len(results) == 1
        assert not results[0]["isError"]
        assert '"Which color should the file be?"="Blue"' in json.dumps(results[0]["content"]).replace(
            "\\", ""
        )
        tool_use_result = next(
            e["payload"]["toolUseResult"]
            for e in after
            if e["payload"]["__typename"] == "UserMessage" and e["payload"]["toolUseResult"]
        )
        assert tool_use_result["answers"] == answers


class TestInterruptAndLiveControls:
    async def test_interrupting_a_run_with_a_pending_request_cancels_it(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            _, request = await requested(sub)
            answer = (await client.execute(INTERRUPT_RUN, {"runId": run_id}))["interruptRun"]
            after = await collect_until_run_ends(sub, run_id)
            late = await decide(client, request["id"], "ALLOW")
            left = (await client.execute(REQUESTS, {"sessionId": session_id}))["permissionRequests"]
        # The payload tells the truth: the run has stopped by the time the mutation answers.
        assert answer["outcome"] == "INTERRUPTED"
        assert answer["run"]["status"] == "INTERRUPTED"
        assert [d["status"] for d in decided(after)] == ["CANCELLED"]
        assert late["__typename"] == "PermissionAlreadyDecidedError"
        assert late["status"] == "CANCELLED"
        assert [r["status"] for r in left] == ["CANCELLED"]
        assert not (workspace(stack, session_id) / "hello.txt").exists()
        assert not [r for r in tool_results(after) if not r["isError"]]

    async def test_the_model_switched_mid_run_answers_the_next_request(self, stack: Stack) -> None:
        switched = "claude-scripted-switched-1"
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            before, request = await requested(sub)
            changed = (await client.execute(SET_MODEL, {"sessionId": session_id, "model": switched}))[
                "setModel"
            ]
            refused = (
                await client.execute(SET_MODE, {"sessionId": session_id, "mode": "BYPASS_PERMISSIONS"})
            )["setPermissionMode"]
            await decide(client, request["id"], "ALLOW")
            after = await collect_until_run_ends(sub, run_id)
            idle = await client.execute(SET_MODEL, {"sessionId": session_id, "model": "sonnet"})
            # Between runs the CLI cannot check a name it does not know (no model access): refused, typed.
            unknown = (await client.execute(SET_MODEL, {"sessionId": session_id, "model": "x"}))["setModel"]
        assert changed["__typename"] == "LiveControlSuccess", changed
        assert refused["__typename"] == "PolicyViolationError"
        first_model = next(
            e["payload"]["model"] for e in before if e["payload"]["__typename"] == "AssistantMessage"
        )
        later = [e["payload"]["model"] for e in after if e["payload"]["__typename"] == "AssistantMessage"]
        assert first_model != switched
        assert later
        assert later[-1] == switched
        # Still live after the run (the CLI stays up between turns), so the change is accepted.
        assert idle["setModel"]["__typename"] == "LiveControlSuccess"
        assert unknown["__typename"] == "ValidationError", unknown
        assert "between runs" in unknown["message"]

    async def test_a_finished_run_reads_already_finished(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="quick one")
            await wait_for_run(client, started["run"]["id"])
            answer = (await client.execute(INTERRUPT_RUN, {"runId": started["run"]["id"]}))["interruptRun"]
        assert answer["outcome"] == "ALREADY_FINISHED"
        assert answer["run"]["status"] == "COMPLETED"


@pytest.fixture
async def short_timeout_stack(tmp_path: Path, scripted_model: ScriptedModelServer) -> AsyncIterator[Stack]:
    running = await start_stack("embedded", tmp_path, scripted_model, permission_timeout_seconds=2.0)
    try:
        yield running
    finally:
        await running.api.stop()


async def test_a_request_nobody_decides_expires_and_the_tool_never_runs(short_timeout_stack: Stack) -> None:
    stack = short_timeout_stack
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        started = await start_ok(client, prompt="[scenario:write-file]")
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        sub = await watch(ws, session_id)
        _, request = await requested(sub)
        after = await collect_until_run_ends(sub, run_id)
        late = await decide(client, request["id"], "ALLOW")
    assert [d["status"] for d in decided(after)] == ["EXPIRED"]
    assert decided(after)[0]["decidedBy"] == "system"
    assert late["__typename"] == "PermissionAlreadyDecidedError"
    assert late["status"] == "EXPIRED"
    assert not (workspace(stack, session_id) / "hello.txt").exists()
    results = tool_results(after)
    assert len(results) == 1
    assert results[0]["isError"] is True
    assert "nobody answered" in json.dumps(results[0]["content"])


async def _pending_write(
    stack: Stack, ws: GraphQLWSClient, client: GraphQLHttpClient
) -> tuple[str, str, Any]:
    started = await start_ok(client, prompt="[scenario:write-file]")
    sub = await watch(ws, started["session"]["id"])
    _, request = await requested(sub)
    return started["session"]["id"], started["run"]["id"], (sub, request)


@pytest.mark.parametrize("special_stack", [{"run_timeout_seconds": 4.0}], indirect=True)
async def test_a_run_past_its_time_limit_cancels_what_it_waits_for(special_stack: Stack) -> None:
    stack = special_stack
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        session_id, run_id, (sub, _) = await _pending_write(stack, ws, client)
        after = await collect_until_run_ends(sub, run_id)
        run = await wait_for_run(client, run_id)
    assert run["status"] == "FAILED"
    assert run["error"] == "the run exceeded its time limit"
    assert [d["status"] for d in decided(after)] == ["CANCELLED"]
    assert not (workspace(stack, session_id) / "hello.txt").exists()


async def test_a_dead_cli_cancels_what_its_run_waits_for(stack: Stack) -> None:
    from tests.graphql.test_failures import cli_pids

    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        session_id, run_id, (sub, _) = await _pending_write(stack, ws, client)
        pids = cli_pids(session_id)
        assert pids, "the agent CLI process was not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        after = await collect_until_run_ends(sub, run_id)
        run = await wait_for_run(client, run_id)
    assert run["status"] == "FAILED"
    assert [d["status"] for d in decided(after)] == ["CANCELLED"]
    assert not (workspace(stack, session_id) / "hello.txt").exists()


async def test_a_server_shutdown_cancels_what_its_runs_wait_for(
    tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    stack = await start_stack("embedded", tmp_path, scripted_model)
    try:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            session_id, _, (_, request) = await _pending_write(stack, ws, client)
    finally:
        await stack.api.stop()
    db = Database(stack.settings.effective_database_url)
    try:
        async with db.session() as session:
            row = await PermissionRepository(session).get(request["id"])
    finally:
        await db.dispose()
    assert row is not None
    assert row.status == "CANCELLED"
    assert not (workspace(stack, session_id) / "hello.txt").exists()


@pytest.mark.parametrize("special_stack", [{"lease_seconds": 3.0, "lease_renew_seconds": 1.0}], indirect=True)
async def test_a_lost_lease_cancels_what_the_run_waits_for(special_stack: Stack) -> None:
    stack = special_stack
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        session_id, run_id, (sub, request) = await _pending_write(stack, ws, client)
        # Another replica took the lease (as after a long database outage on this one).
        await take_over(stack.api.services.db, session_id)
        after = await collect_until_run_ends(sub, run_id)
        run = await wait_for_run(client, run_id)
        late = await decide(client, request["id"], "ALLOW")
    assert run["status"] == "FAILED"
    assert "lost the session's lease" in run["error"]
    assert [d["status"] for d in decided(after)] == ["CANCELLED"]
    assert late["__typename"] == "PermissionAlreadyDecidedError"
    assert not (workspace(stack, session_id) / "hello.txt").exists()


CONTEXT_USAGE = """
query Usage($sessionId: ID!) {
  contextUsage(sessionId: $sessionId) { model totalTokens maxTokens percentage categories }
}
"""


async def test_the_live_agents_context_usage_is_readable_by_its_tenant_only(stack: Stack) -> None:
    async with stack.client() as client, stack.client(stack.other_key) as theirs:
        started = await start_ok(client, prompt="how full is your context?")
        await wait_for_run(client, started["run"]["id"])
        session_id = started["session"]["id"]
        usage = (await client.execute(CONTEXT_USAGE, {"sessionId": session_id}))["contextUsage"]
        foreign = (await theirs.execute(CONTEXT_USAGE, {"sessionId": session_id}))["contextUsage"]
    assert usage is not None
    assert usage["model"]
    assert usage["maxTokens"] > 0
    assert usage["totalTokens"] >= 0
    assert isinstance(usage["categories"], list)
    assert foreign is None


async def test_a_permission_mode_switched_on_the_live_agent_applies_to_its_next_run(stack: Stack) -> None:
    async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        first = await start_ok(client, prompt="hello")
        session_id = first["session"]["id"]
        await wait_for_run(client, first["run"]["id"])
        switched = (await client.execute(SET_MODE, {"sessionId": session_id, "mode": "ACCEPT_EDITS"}))[
            "setPermissionMode"
        ]
        sub = await watch(ws, session_id)
        second = await start_ok(client, prompt="[scenario:write-file]", sessionId=session_id)
        events = await collect_until_run_ends(sub, second["run"]["id"])
        audit = (await client.execute(AUDIT, {"action": "session.set_permission_mode"}))["auditLog"]["edges"]
    assert switched["__typename"] == "LiveControlSuccess", switched
    assert not any(e["payload"]["__typename"] == "PermissionRequested" for e in events)
    assert (workspace(stack, session_id) / "hello.txt").read_text() == "hello\n"
    assert any(edge["node"]["targetId"] == session_id for edge in audit)


async def test_live_controls_need_a_live_agent(tmp_path: Path, scripted_model: ScriptedModelServer) -> None:
    stack = await start_stack("embedded", tmp_path, scripted_model, idle_client_seconds=1.0)
    try:
        async with stack.client() as client:
            started = await start_ok(client, prompt="hello")
            session_id = started["session"]["id"]
            await wait_for_run(client, started["run"]["id"])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:  # the idle agent is stopped and its lease released
                answer = (await client.execute(SET_MODEL, {"sessionId": session_id, "model": "sonnet"}))[
                    "setModel"
                ]
                if answer["__typename"] != "LiveControlSuccess" or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            usage = (await client.execute(CONTEXT_USAGE, {"sessionId": session_id}))["contextUsage"]
            unknown = (await client.execute(SET_MODEL, {"sessionId": "nope", "model": "m"}))["setModel"]
    finally:
        await stack.api.stop()
    assert answer["__typename"] == "SessionNotLiveError"
    assert answer["code"] == "SESSION_NOT_LIVE"
    assert usage is None
    assert unknown["__typename"] == "NotFoundError"
