"""Hooks as webhooks, end to end: the real SDK and CLI call the tenant's endpoint, which decides.

Each test registers its webhooks for a tenant of its own (webhooks are per tenant, and apply to every
session of it), against a receiver on loopback that the stack's WEBHOOK_ALLOWED_HOSTS lists by port.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.auth import create_key
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import MODES, Stack, running_stack
from tests.documents import start_ok, wait_for_run, workspace_of
from tests.support.graphql_http import GraphQLHttpClient
from tests.webhooks.receiver import DENY_REASON, REWRITTEN, STOP_REASON, WebhookReceiver

# Short, so the timeout case is quick; ample for a loopback receiver on a loaded machine.
WEBHOOK_TIMEOUT = 4.0
SECRET = "whsec_" + "s3cr3t" * 4

REGISTER = """
mutation Register($input: RegisterWebhookInput!) {
  registerWebhook(input: $input) {
    __typename
    ... on RegisterWebhookSuccess { webhook { id url events failureMode createdAt } }
    ... on Error { code message }
    ... on ValidationError { field }
    ... on PolicyViolationError { rule }
  }
}
"""

DELETE = """
mutation Delete($id: ID!) {
  deleteWebhook(id: $id) {
    __typename
    ... on DeleteWebhookSuccess { id }
    ... on NotFoundError { code resource resourceId }
  }
}
"""

WEBHOOKS = "query { webhooks { id url events failureMode createdAt } }"

EVENTS = """
query Events($sessionId: ID!) {
  events(sessionId: $sessionId, first: 1000) {
    seq
    payload {
      __typename
      ... on HookFired { hookEvent toolName data }
      ... on UserMessage { content { __typename ... on ToolResultBlock { content isError } } }
      ... on ResultMessage { subtype result stopReason terminalReason }
    }
  }
}
"""

AUDIT = """
query Audit($action: String) {
  auditLog(filter: {action: $action}, first: 100) { edges { node { action actor targetId details } } }
}
"""


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module", params=MODES)
async def hook_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scripted_model: ScriptedModelServer,
    receiver: WebhookReceiver,
) -> AsyncIterator[Stack]:
    mode = request.param
    async with running_stack(
        mode,
        tmp_path_factory.mktemp(f"webhooks-{mode}"),
        scripted_model,
        "caga_webhooks",
        webhook_allowed_hosts=[f"127.0.0.1:{receiver.port}"],
        webhook_timeout_seconds=WEBHOOK_TIMEOUT,
    ) as running:
        yield running


async def tenant_client(stack: Stack) -> GraphQLHttpClient:
    """A client for a fresh tenant, so one test's webhooks never fire in another's sessions."""
    key = await create_key(stack.api.services.db, tenant_name=f"hooks-{uuid.uuid4().hex[:8]}", name="tests")
    return GraphQLHttpClient(stack.api.base_url, key.secret)


async def register(client: GraphQLHttpClient, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    data = await client.execute(
        REGISTER, {"input": {"url": url, "events": events, "secret": SECRET, **extra}}
    )
    result: dict[str, Any] = data["registerWebhook"]
    return result


async def register_ok(client: GraphQLHttpClient, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    result = await register(client, url, events, **extra)
    assert result["__typename"] == "RegisterWebhookSuccess", result
    webhook: dict[str, Any] = result["webhook"]
    return webhook


async def write_run(client: GraphQLHttpClient, **options: Any) -> tuple[str, dict[str, Any]]:
    """The scripted model writes hello.txt in the workspace; returns the session id and the ended run."""
    started = await start_ok(client, prompt="[scenario:write-file]", **options)
    run = await wait_for_run(client, started["run"]["id"], timeout=90)
    return started["session"]["id"], run


async def session_events(client: GraphQLHttpClient, session_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.execute(EVENTS, {"sessionId": session_id}))["events"]
    return events


def hooks_fired(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["payload"] for e in events if e["payload"]["__typename"] == "HookFired"]


def tool_results(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for e in events
        if e["payload"]["__typename"] == "UserMessage"
        for block in e["payload"]["content"]
        if block["__typename"] == "ToolResultBlock"
    ]


def hello(stack: Stack, session_id: str) -> Path:
    return workspace_of(stack.data_dir, session_id) / "hello.txt"


class TestPreToolUseDecides:
    async def test_an_allowing_webhook_lets_a_write_run_that_would_otherwise_need_permission(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            await register_ok(client, receiver.url("allow", token, SECRET), ["PreToolUse"])
            # A PostToolUse endpoint that fails: other events fail open, so the run goes on.
            post = await register_ok(client, receiver.url("error", token, SECRET), ["PostToolUse"])
            # DEFAULT mode and no allowedTools: the Write is not pre-approved, only the hook allows it.
            session_id, run = await write_run(client, permissionMode="DEFAULT")
            events = await session_events(client, session_id)
            calls = (await client.execute(AUDIT, {"action": "webhook.call"}))["auditLog"]["edges"]

        assert run["status"] == "COMPLETED", run
        assert hello(hook_stack, session_id).read_text() == "hello\n"
        received = receiver.calls[token]
        assert [c.behaviour for c in received] == ["allow", "error"]
        assert all(c.verified for c in received)
        pre = received[0].body
        assert pre["hookEvent"] == "PreToolUse"
        assert pre["sessionId"] == session_id
        assert pre["runId"] == run["id"]
        assert pre["toolName"] == "Write"
        assert pre["toolInput"]["content"] == "hello\n"
        assert "transcript_path" not in pre["data"]
        assert received[1].body["hookEvent"] == "PostToolUse"

        fired = hooks_fired(events)
        assert [(f["hookEvent"], f["toolName"]) for f in fired] == [
            ("PreToolUse", "Write"),
            ("PostToolUse", "Write"),
        ]
        assert fired[0]["data"]["decision"] == "allow"
        assert fired[0]["data"]["ok"] is True
        assert fired[1]["data"]["ok"] is False
        assert fired[1]["data"]["httpStatus"] == 500
        assert fired[1]["data"]["failedClosed"] is False
        assert [bool(r["isError"]) for r in tool_results(events)] == [False]

        audited = sorted((edge["node"]["details"]["hookEvent"], edge["node"]["targetId"]) for edge in calls)
        assert len(audited) == 2
        assert ("PostToolUse", post["id"]) in audited
        assert all(edge["node"]["actor"] == "system:webhooks" for edge in calls)

    async def test_a_denying_webhook_blocks_the_write_and_the_model_reads_why(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            await register_ok(client, receiver.url("deny", token, SECRET), ["PreToolUse"])
            # ACCEPT_EDITS would let the Write through on its own: the deny is the hook's alone.
            session_id, run = await write_run(client, permissionMode="ACCEPT_EDITS")
            events = await session_events(client, session_id)

        assert run["status"] == "COMPLETED", run
        assert not hello(hook_stack, session_id).exists()
        assert all(call.verified for call in receiver.calls[token])
        results = tool_results(events)
        assert [r["isError"] for r in results] == [True]
        assert DENY_REASON in str(results[0]["content"])
        fired = hooks_fired(events)
        assert [f["data"]["decision"] for f in fired] == ["deny"]
        assert fired[0]["data"]["reason"] == DENY_REASON

    async def test_a_webhook_that_does_not_answer_in_time_fails_closed(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            await register_ok(client, receiver.url("slow", token, SECRET), ["PreToolUse"])
            session_id, run = await write_run(client, permissionMode="ACCEPT_EDITS")
            events = await session_events(client, session_id)

        assert run["status"] == "COMPLETED", run
        assert not hello(hook_stack, session_id).exists()
        assert [call.verified for call in receiver.calls[token]] == [True]
        results = tool_results(events)
        assert [r["isError"] for r in results] == [True]
        assert "no answer within" in str(results[0]["content"])
        fired = hooks_fired(events)
        assert len(fired) == 1
        assert fired[0]["data"]["failedClosed"] is True
        assert fired[0]["data"]["durationMs"] >= WEBHOOK_TIMEOUT * 1000 * 0.9

    async def test_a_garbled_answer_fails_closed_and_open_when_the_webhook_says_so(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            webhook = await register_ok(client, receiver.url("not-json", token, SECRET), ["PreToolUse"])
            closed_session, closed_run = await write_run(client, permissionMode="ACCEPT_EDITS")
            await client.execute(DELETE, {"id": webhook["id"]})
            opened = await register_ok(
                client, receiver.url("not-json", token, SECRET), ["PreToolUse"], failureMode="OPEN"
            )
            assert opened["failureMode"] == "OPEN"
            open_session, open_run = await write_run(client, permissionMode="ACCEPT_EDITS")

        assert closed_run["status"] == open_run["status"] == "COMPLETED"
        assert not hello(hook_stack, closed_session).exists()
        assert hello(hook_stack, open_session).read_text() == "hello\n"

    async def test_an_answer_can_rewrite_the_tool_input(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            await register_ok(client, receiver.url("rewrite", token, SECRET), ["PreToolUse"])
            session_id, run = await write_run(client, permissionMode="DEFAULT")
        assert run["status"] == "COMPLETED", run
        assert hello(hook_stack, session_id).read_text() == REWRITTEN

    async def test_continue_false_stops_the_agent_with_the_reason(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            await register_ok(client, receiver.url("stop", token, SECRET), ["PreToolUse"])
            session_id, run = await write_run(client, permissionMode="ACCEPT_EDITS")
            events = await session_events(client, session_id)
        assert run["status"] == "COMPLETED", run
        # Measured: `continue: false` alone would still run the pending tool; the server denies it too.
        assert not hello(hook_stack, session_id).exists()
        results = tool_results(events)
        assert [r["isError"] for r in results] == [True]
        assert STOP_REASON in str(results[0]["content"])
        result = next(e["payload"] for e in events if e["payload"]["__typename"] == "ResultMessage")
        assert result["terminalReason"] == "hook_stopped"


class TestWhenWebhooksApply:
    async def test_a_webhook_registered_mid_session_applies_from_the_next_run_and_stops_when_deleted(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            first = await start_ok(client, prompt="no hooks yet")
            session_id = first["session"]["id"]
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"

            webhook = await register_ok(client, receiver.url("deny", token, SECRET), ["PreToolUse"])
            denied = await start_ok(
                client, prompt="[scenario:write-file]", sessionId=session_id, permissionMode="ACCEPT_EDITS"
            )
            assert (await wait_for_run(client, denied["run"]["id"]))["status"] == "COMPLETED"
            assert not hello(hook_stack, session_id).exists()

            await client.execute(DELETE, {"id": webhook["id"]})
            allowed = await start_ok(
                client, prompt="[scenario:write-file]", sessionId=session_id, permissionMode="ACCEPT_EDITS"
            )
            assert (await wait_for_run(client, allowed["run"]["id"]))["status"] == "COMPLETED"
            events = await session_events(client, session_id)

        assert hello(hook_stack, session_id).read_text() == "hello\n"
        assert len(receiver.calls[token]) == 1
        assert [f["data"]["decision"] for f in hooks_fired(events)] == ["deny"]

    async def test_a_webhook_registered_while_the_sessions_cli_idles_applies_to_the_prompt_sent_ahead(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        """The follow-up's prompt goes to the hookless CLI before startRun's transaction, which reads
        the new webhook (docs/architecture.md, decision 15): that turn is undone, and the prompt is sent
        again, once, on a CLI that has the hook."""
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            first = await start_ok(client, prompt="no hooks yet", permissionMode="ACCEPT_EDITS")
            session_id = first["session"]["id"]
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            idle = hook_stack.api.services.run_manager._actors[session_id]._pump
            assert idle is not None

            await register_ok(client, receiver.url("deny", token, SECRET), ["PreToolUse"])
            denied = await start_ok(
                client, prompt="[scenario:write-file]", sessionId=session_id, permissionMode="ACCEPT_EDITS"
            )
            assert (await wait_for_run(client, denied["run"]["id"]))["status"] == "COMPLETED"
            events = await session_events(client, session_id)
            # A CLI of its own: the idle one, which the prompt went to first, was stopped.
            assert hook_stack.api.services.run_manager._actors[session_id]._pump is not idle

        assert not hello(hook_stack, session_id).exists()
        assert len(receiver.calls[token]) == 1
        assert [f["data"]["decision"] for f in hooks_fired(events)] == ["deny"]
        [transcript] = (hook_stack.data_dir / "tenants").glob(
            f"*/sessions/{session_id}/agent/projects/*/*.jsonl"
        )
        lines = [json.loads(line) for line in transcript.read_text().splitlines()]
        prompts = [line["message"]["content"] for line in lines if line.get("type") == "user"]
        assert prompts.count("[scenario:write-file]") == 1

    async def test_a_webhook_registered_after_a_new_session_applies_to_the_next_new_session(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        # A new session's CLI starts with the tenant's hook events as last read (api/runtime/early_start.py):
        # a webhook registered since must still reach the next new session's first run.
        token = uuid.uuid4().hex
        async with await tenant_client(hook_stack) as client:
            first = await start_ok(client, prompt="no hooks yet")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"

            await register_ok(client, receiver.url("deny", token, SECRET), ["PreToolUse"])
            session_id, run = await write_run(client, permissionMode="ACCEPT_EDITS")
            events = await session_events(client, session_id)

        assert run["status"] == "COMPLETED", run
        assert not hello(hook_stack, session_id).exists()
        assert [c.behaviour for c in receiver.calls[token]] == ["deny"]
        assert [f["data"]["decision"] for f in hooks_fired(events)] == ["deny"]


class TestRegistration:
    async def test_internal_addresses_are_refused_unless_listed(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        async with await tenant_client(hook_stack) as client:
            for url in [
                "http://127.0.0.1/hook",  # listed is 127.0.0.1 on the receiver's port only
                "http://localhost:1/hook",
                "http://10.1.2.3/hook",
                "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/hook",
                "http://[::ffff:127.0.0.1]/hook",
            ]:
                result = await register(client, url, ["PreToolUse"])
                assert result["__typename"] == "PolicyViolationError", (url, result)
                assert result["rule"] == "webhook.ssrf"
            bad = await register(client, "ftp://example.com/hook", ["PreToolUse"])
            assert (bad["__typename"], bad["field"]) == ("ValidationError", "url")
            unknown = await register(client, receiver.url("allow", "x", SECRET), ["PreToolUse", "OnLunch"])
            assert (unknown["__typename"], unknown["field"]) == ("ValidationError", "events")
            short = await client.execute(
                REGISTER,
                {"input": {"url": receiver.url("allow", "x", SECRET), "events": ["Stop"], "secret": "short"}},
            )
            assert short["registerWebhook"]["field"] == "secret"
            assert (await client.execute(WEBHOOKS))["webhooks"] == []

    async def test_webhooks_are_the_tenants_own_and_their_secret_is_never_shown(
        self, hook_stack: Stack, receiver: WebhookReceiver
    ) -> None:
        url = receiver.url("allow", uuid.uuid4().hex, SECRET)
        async with await tenant_client(hook_stack) as owner, await tenant_client(hook_stack) as other:
            webhook = await register_ok(owner, url, ["Stop", "PreToolUse"])
            assert webhook["events"] == ["PreToolUse", "Stop"]
            assert webhook["failureMode"] is None
            listed = (await owner.execute(WEBHOOKS))["webhooks"]
            assert [w["id"] for w in listed] == [webhook["id"]]
            assert SECRET not in str(listed)

            assert (await other.execute(WEBHOOKS))["webhooks"] == []
            refused = (await other.execute(DELETE, {"id": webhook["id"]}))["deleteWebhook"]
            assert refused["__typename"] == "NotFoundError"
            assert (refused["resource"], refused["resourceId"]) == ("Webhook", webhook["id"])

            deleted = (await owner.execute(DELETE, {"id": webhook["id"]}))["deleteWebhook"]
            assert deleted == {"__typename": "DeleteWebhookSuccess", "id": webhook["id"]}
            assert (await owner.execute(WEBHOOKS))["webhooks"] == []
            again = (await owner.execute(DELETE, {"id": webhook["id"]}))["deleteWebhook"]
            assert again["__typename"] == "NotFoundError"

            actions = [
                (edge["node"]["action"], edge["node"]["targetId"])
                for edge in (await owner.execute(AUDIT, {"action": None}))["auditLog"]["edges"]
            ]
            assert ("webhook.register", webhook["id"]) in actions
            assert ("webhook.delete", webhook["id"]) in actions
            assert (await other.execute(AUDIT, {"action": None}))["auditLog"]["edges"] == []
