"""The read path's shortcuts answer exactly what the long way did: the `events` page read as rows,
union members found by class, responses encoded by orjson (with the standard library behind it)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from api.auth import authenticate
from persistence.models import AgentSession, Event, utcnow
from tests.conftest import Stack

EVENTS = """
query Events($sessionId: ID!) {
  events(sessionId: $sessionId, afterSeq: 0, first: 10) {
    seq sessionId runId createdAt
    payload {
      __typename
      ... on AssistantMessage { model content { __typename ... on TextBlock { text }
        ... on ToolUseBlock { id name input } ... on OtherBlock { data } } }
      ... on RunStatusChanged { runId status }
      ... on UnknownEvent { kind data }
    }
  }
}"""

# Non-ASCII text, an integer beyond 64 bits (orjson refuses it: the standard library encodes it) and a
# float: what a tool's input can hold.
TOOL_INPUT: dict[str, Any] = {"pattern": "café ✓ 日本", "big": 2**70, "ratio": 0.1}


async def _seed(stack: Stack) -> str:
    db = stack.api.services.db
    principal = await authenticate(db, stack.key)
    assert principal is not None
    session_id, run_id, at = str(uuid.uuid4()), str(uuid.uuid4()), utcnow()
    content = [
        {"type": "text", "text": "héllo"},
        {"type": "tool_use", "id": "toolu_1", "name": "Glob", "input": TOOL_INPUT},
        {"type": "mystery", "data": {"x": 1}},
    ]
    payloads = [
        ("run_status", {"run_id": run_id, "status": "RUNNING"}),
        ("assistant", {"uuid": str(uuid.uuid4()), "model": "claude", "content": content}),
        ("from_the_future", {"n": 1}),
    ]
    async with db.session() as s:
        await s.execute(
            sa.insert(AgentSession),
            [
                {
                    "id": session_id,
                    "tenant_id": principal.tenant_id,
                    "title": "réad ✓ 日本",
                    "status": "IDLE",
                    "created_at": at,
                    "updated_at": at,
                    "last_seq": len(payloads),
                    "total_cost_usd": 0.0,
                }
            ],
        )
        await s.execute(
            sa.insert(Event),
            [
                {
                    "session_id": session_id,
                    "seq": seq,
                    "run_id": run_id,
                    "kind": kind,
                    "payload": payload,
                    "created_at": at,
                }
                for seq, (kind, payload) in enumerate(payloads, start=1)
            ],
        )
        await s.commit()
    return session_id


async def test_an_events_page_reads_back_what_was_stored(stack: Stack) -> None:
    session_id = await _seed(stack)
    client = stack.client()
    try:
        response = await client.execute_raw(EVENTS, {"sessionId": session_id})
    finally:
        await client.aclose()
    assert response.status_code == 200, response.text
    body = json.loads(response.content)
    assert "errors" not in body, body
    events = body["data"]["events"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert {e["sessionId"] for e in events} == {session_id}
    status, assistant, unknown = (e["payload"] for e in events)
    assert status == {"__typename": "RunStatusChanged", "runId": events[0]["runId"], "status": "RUNNING"}
    assert assistant["__typename"] == "AssistantMessage"
    assert [block["__typename"] for block in assistant["content"]] == [
        "TextBlock",
        "ToolUseBlock",
        "OtherBlock",
    ]
    assert assistant["content"][0]["text"] == "héllo"
    assert assistant["content"][1]["input"] == TOOL_INPUT
    assert assistant["content"][2]["data"] == {"x": 1}
    assert unknown == {"__typename": "UnknownEvent", "kind": "from_the_future", "data": {"n": 1}}


async def test_non_ascii_text_is_sent_as_utf8(stack: Stack) -> None:
    session_id = await _seed(stack)
    client = stack.client()
    try:
        response = await client.execute_raw(
            "query S($id: ID!) { session(id: $id) { title } }", {"id": session_id}
        )
    finally:
        await client.aclose()
    assert response.headers["content-type"].startswith("application/json")
    assert "réad ✓ 日本".encode() in response.content
    assert json.loads(response.content) == {"data": {"session": {"title": "réad ✓ 日本"}}}


async def test_another_tenants_session_is_not_found(stack: Stack) -> None:
    session_id = await _seed(stack)
    client = stack.client(stack.other_key)
    try:
        response = await client.execute_raw(EVENTS, {"sessionId": session_id})
    finally:
        await client.aclose()
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_page_past_the_end_of_ones_own_log_is_empty_not_missing(stack: Stack) -> None:
    # The page carries the tenant check; only an empty page asks whether the session is there at all.
    session_id = await _seed(stack)
    query = "query E($id: ID!, $after: Int) { events(sessionId: $id, afterSeq: $after, first: 10) { seq } }"
    client = stack.client()
    try:
        tail = await client.execute_raw(query, {"id": session_id, "after": 2})
        past = await client.execute_raw(query, {"id": session_id, "after": 3})
        missing = await client.execute_raw(query, {"id": str(uuid.uuid4()), "after": 0})
    finally:
        await client.aclose()
    assert tail.json() == {"data": {"events": [{"seq": 3}]}}
    assert past.json() == {"data": {"events": []}}
    assert missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
