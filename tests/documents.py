"""GraphQL documents as a client writes them, and small helpers that read like a client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from api.runtime.run_manager import RunManager
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient, Subscription

ERROR_FIELDS = """
  ... on Error { __typename code message }
  ... on ValidationError { field }
  ... on NotFoundError { resource resourceId }
  ... on SessionBusyError { sessionId activeRunId }
  ... on PolicyViolationError { rule }
  ... on RateLimitedError { retryAfterSeconds }
"""

START_RUN = (
    """
mutation StartRun($input: StartRunInput!) {
  startRun(input: $input) {
    __typename
    ... on StartRunSuccess {
      run { id sessionId status prompt checkpointId }
      session { id title status }
    }
"""
    + ERROR_FIELDS
    + """
  }
}
"""
)

INTERRUPT_RUN = """
mutation Interrupt($runId: ID!) {
  interruptRun(runId: $runId) {
    __typename
    ... on InterruptRunSuccess { outcome run { id status error } }
    ... on Error { code message }
    ... on NotFoundError { resource resourceId }
  }
}
"""

EVENT_FIELDS = """
  seq ephemeral sessionId runId createdAt
  payload {
    __typename
    ... on AssistantMessage {
      uuid model stopReason error parentToolUseId
      content {
        __typename
        ... on TextBlock { text }
        ... on ThinkingBlock { thinking signature }
        ... on ToolUseBlock { id name input }
        ... on ToolResultBlock { toolUseId content isError }
      }
    }
    ... on UserMessage {
      uuid text toolUseResult
      content { __typename ... on ToolResultBlock { toolUseId content isError } ... on TextBlock { text } }
    }
    ... on SystemMessage { subtype data }
    ... on ResultMessage { subtype isError numTurns totalCostUsd result structuredOutput terminalReason }
    ... on PartialMessage { event }
    ... on RunStatusChanged { runId status error }
    ... on PermissionRequested { request { ...PermissionRequestFields } }
    ... on PermissionDecided { request { ...PermissionRequestFields } }
  }
"""

PERMISSION_REQUEST_FIELDS = """
fragment PermissionRequestFields on PermissionRequest {
  id sessionId runId toolName toolUseId input status message updatedInput allowForSession decidedBy
  title displayName description createdAt decidedAt expiresAt
}
"""

SESSION_EVENTS = (
    """
subscription Watch($sessionId: ID!, $afterSeq: Int, $partial: Boolean) {
  sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq, includePartialMessages: $partial) {
"""
    + EVENT_FIELDS
    + """
  }
}
"""
    + PERMISSION_REQUEST_FIELDS
)

EVENTS = (
    """
query Events($sessionId: ID!, $afterSeq: Int, $first: Int) {
  events(sessionId: $sessionId, afterSeq: $afterSeq, first: $first) {
"""
    + EVENT_FIELDS
    + """
  }
}
"""
    + PERMISSION_REQUEST_FIELDS
)

SESSION = """
query Session($id: ID!) {
  session(id: $id) {
    id title status lastSeq totalCostUsd createdAt updatedAt
    runs(first: 50) {
      edges {
        cursor
        node { id status prompt error checkpointId startedAt finishedAt result { subtype isError result } }
      }
      pageInfo { hasNextPage endCursor }
    }
    checkpoints { id runId prompt }
  }
}
"""

RUN = """
query Run($id: ID!) {
  run(id: $id) { id sessionId status prompt error result { subtype isError result structuredOutput } }
}
"""


async def start_run(client: GraphQLHttpClient, **fields: Any) -> dict[str, Any]:
    """startRun; returns the union member (fails on top-level errors)."""
    data = await client.execute(START_RUN, {"input": fields})
    result: dict[str, Any] = data["startRun"]
    return result


async def start_ok(client: GraphQLHttpClient, **fields: Any) -> dict[str, Any]:
    result = await start_run(client, **fields)
    assert result["__typename"] == "StartRunSuccess", result
    return result


async def wait_for_run(client: GraphQLHttpClient, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll run(id) until it is terminal (for tests that do not watch the stream)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run: dict[str, Any] = (await client.execute(RUN, {"id": run_id}))["run"]
        if run["status"] in {"COMPLETED", "FAILED", "INTERRUPTED"}:
            return run
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
        await asyncio.sleep(0.1)


async def collect_until_run_ends(
    sub: Subscription, run_id: str, *, timeout: float = 60
) -> list[dict[str, Any]]:
    """Events from a sessionEvents subscription until `run_id` reaches a terminal status."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        payload = await sub.next(timeout=max(0.1, deadline - loop.time()))
        assert not payload.get("errors"), payload
        event = payload["data"]["sessionEvents"]
        events.append(event)
        body = event["payload"]
        if (
            body["__typename"] == "RunStatusChanged"
            and body["runId"] == run_id
            and body["status"] in {"COMPLETED", "FAILED", "INTERRUPTED"}
        ):
            return events


async def watch(
    ws: GraphQLWSClient, session_id: str, after_seq: int = 0, partial: bool = False
) -> Subscription:
    return await ws.subscribe(
        SESSION_EVENTS, {"sessionId": session_id, "afterSeq": after_seq, "partial": partial}
    )


def durable_seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events if not event["ephemeral"]]


def run_status(events: list[dict[str, Any]], run_id: str) -> list[str]:
    return [
        e["payload"]["status"]
        for e in events
        if e["payload"]["__typename"] == "RunStatusChanged" and e["payload"]["runId"] == run_id
    ]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [
        block["text"]
        for e in events
        if e["payload"]["__typename"] == "AssistantMessage"
        for block in e["payload"]["content"]
        if block["__typename"] == "TextBlock"
    ]


async def until_no_runs_executing(manager: RunManager, timeout: float = 10) -> None:
    """A run reads as over (its status is committed) a moment before its actor frees the slot."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if manager.running == 0:
            return
        assert loop.time() < deadline, f"{manager.running} run(s) still counted as executing"
        await asyncio.sleep(0.05)


def workspace_of(data_dir: Path, session_id: str) -> Path:
    """The session's workspace under DATA_DIR/tenants/<tenant>/sessions/<session>/ (one tenant owns it)."""
    found = list((data_dir / "tenants").glob(f"*/sessions/{session_id}/workspace"))
    assert len(found) == 1, f"expected one workspace for {session_id}, found {found}"
    return found[0]
