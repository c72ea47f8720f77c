"""Start a run, watch it live, follow up, read it all back: the real SDK and CLI, on both storage modes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Stack
from tests.documents import (
    EVENTS,
    SESSION,
    collect_until_run_ends,
    durable_seqs,
    run_status,
    start_ok,
    texts,
    wait_for_run,
    watch,
    workspace_of,
)
from tests.support.graphql_ws import GraphQLWSClient


class TestStartRunAndWatch:
    async def test_a_new_session_runs_and_streams_every_event_in_order(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="hello there")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            # The replica is free: the run began in startRun's transaction, its agent starting meanwhile.
            assert started["run"]["status"] == "RUNNING"
            assert started["session"]["title"] == "hello there"

            sub = await watch(ws, session_id)
            events = await collect_until_run_ends(sub, run_id)

        assert durable_seqs(events) == list(range(1, len(events) + 1))
        assert run_status(events, run_id) == ["QUEUED", "RUNNING", "COMPLETED"]
        assert texts(events) == ["You said: hello there"]
        kinds = [e["payload"]["__typename"] for e in events]
        assert kinds.index("SystemMessage") < kinds.index("AssistantMessage") < kinds.index("ResultMessage")
        result = next(e["payload"] for e in events if e["payload"]["__typename"] == "ResultMessage")
        assert result["subtype"] == "success"
        assert result["isError"] is False
        assert all(e["runId"] == run_id and e["sessionId"] == session_id for e in events)

    async def test_a_follow_up_turn_continues_the_same_session_and_log(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            first = await start_ok(client, prompt="first turn")
            session_id = first["session"]["id"]
            sub = await watch(ws, session_id)
            turn1 = await collect_until_run_ends(sub, first["run"]["id"])

            second = await start_ok(client, prompt="second turn", sessionId=session_id)
            assert second["session"]["id"] == session_id
            turn2 = await collect_until_run_ends(sub, second["run"]["id"])

            session = (await client.execute(SESSION, {"id": session_id}))["session"]
            log = (await client.execute(EVENTS, {"sessionId": session_id, "first": 1000}))["events"]

        streamed = turn1 + turn2
        assert durable_seqs(streamed) == list(range(1, len(streamed) + 1))
        assert texts(turn2) == ["You said: second turn"]
        assert [e["seq"] for e in log] == durable_seqs(streamed)
        assert [e["payload"] for e in log] == [e["payload"] for e in streamed]
        assert session["lastSeq"] == len(streamed)
        assert session["status"] == "IDLE"
        runs = [edge["node"] for edge in session["runs"]["edges"]]
        assert [r["prompt"] for r in runs] == ["first turn", "second turn"]
        assert [r["status"] for r in runs] == ["COMPLETED", "COMPLETED"]
        assert runs[1]["result"]["result"] == "You said: second turn"
        assert [c["runId"] for c in session["checkpoints"]] == [r["id"] for r in runs]
        assert session["totalCostUsd"] > 0

    async def test_a_follow_up_on_the_idle_agent_starts_in_start_runs_transaction(self, stack: Stack) -> None:
        slow = "[scenario]" + json.dumps(
            {"steps": [{"delay_ms": 1500, "content": [{"type": "text", "text": "slow"}]}]}
        )
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            first = await start_ok(client, prompt="first turn")
            session_id = first["session"]["id"]
            await wait_for_run(client, first["run"]["id"])
            # The session's agent is live and idle on this replica: the run begins as it is queued.
            second = await start_ok(client, prompt=slow, sessionId=session_id, onBusy="ENQUEUE")
            assert second["run"]["status"] == "RUNNING"
            # Meanwhile the agent is busy: the next one waits for the dispatcher, as before.
            third = await start_ok(client, prompt="third turn", sessionId=session_id, onBusy="ENQUEUE")
            assert third["run"]["status"] == "QUEUED"
            sub = await watch(ws, session_id)
            events = await collect_until_run_ends(sub, third["run"]["id"])
        assert durable_seqs(events) == list(range(1, len(events) + 1))
        for run in (first, second, third):
            assert run_status(events, run["run"]["id"]) == ["QUEUED", "RUNNING", "COMPLETED"]
        assert texts(events) == ["You said: first turn", "slow", "You said: third turn"]

    async def test_events_page_by_after_seq(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="page me")
            await wait_for_run(client, started["run"]["id"])
            session_id = started["session"]["id"]
            everything = (await client.execute(EVENTS, {"sessionId": session_id}))["events"]
            pages: list[int] = []
            after = 0
            while True:
                page = (
                    await client.execute(EVENTS, {"sessionId": session_id, "afterSeq": after, "first": 2})
                )["events"]
                if not page:
                    break
                pages.extend(e["seq"] for e in page)
                after = page[-1]["seq"]
        assert pages == [e["seq"] for e in everything] == list(range(1, len(everything) + 1))


class TestSubscriptionCursor:
    async def test_resubscribing_with_the_last_seq_loses_and_repeats_nothing(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:many:30]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            head = [(await sub.next(timeout=30))["data"]["sessionEvents"] for _ in range(5)]
            await sub.complete()

            resumed = await watch(ws, session_id, after_seq=head[-1]["seq"])
            tail = await collect_until_run_ends(resumed, run_id)
        seqs = durable_seqs(head + tail)
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(texts(head + tail)) == 30

    async def test_a_finished_session_replays_from_any_point(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="replay me")
            run = await wait_for_run(client, started["run"]["id"])
            assert run["status"] == "COMPLETED"
            session_id = started["session"]["id"]
            last = (await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"]
            sub = await watch(ws, session_id, after_seq=2)
            replayed = [(await sub.next(timeout=10))["data"]["sessionEvents"] for _ in range(last - 2)]
        assert [e["seq"] for e in replayed] == list(range(3, last + 1))


class TestLargeRuns:
    async def test_a_run_of_a_thousand_messages_arrives_complete_and_in_order(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:many:1000]")
            sub = await watch(ws, started["session"]["id"])
            events = await collect_until_run_ends(sub, started["run"]["id"], timeout=120)
        assert durable_seqs(events) == list(range(1, len(events) + 1))
        assert texts(events) == [f"block {i}" for i in range(1, 1001)]


class TestPartialMessages:
    async def test_token_deltas_are_live_only_and_the_durable_message_follows(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="stream tokens please")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id, partial=True)
            events = await collect_until_run_ends(sub, run_id)
            log = (await client.execute(EVENTS, {"sessionId": session_id, "first": 1000}))["events"]

        partials = [e for e in events if e["ephemeral"]]
        assert partials, "asked for partial messages, got none"
        assert all(e["payload"]["__typename"] == "PartialMessage" for e in partials)
        deltas = [
            p["payload"]["event"]["delta"]["text"]
            for p in partials
            if p["payload"]["event"].get("type") == "content_block_delta"
            and p["payload"]["event"]["delta"].get("type") == "text_delta"
        ]
        assert "".join(deltas) == "You said: stream tokens please"
        # An ephemeral event carries the seq of the durable event before it, and never reaches the log.
        last = 0
        for event in events:
            if event["ephemeral"]:
                assert event["seq"] == last
            else:
                last = event["seq"]
        assert not any(e["ephemeral"] for e in log)
        assert durable_seqs(events) == [e["seq"] for e in log]
        assert texts(events) == ["You said: stream tokens please"]


class TestAgentFeatures:
    async def test_thinking_and_tool_use_reach_the_client_typed(self, stack: Stack) -> None:
        async with stack.client() as client, GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            started = await start_ok(client, prompt="[scenario:write-file]", permissionMode="ACCEPT_EDITS")
            sub = await watch(ws, started["session"]["id"])
            events = await collect_until_run_ends(sub, started["run"]["id"])
            thought = await start_ok(client, prompt="[scenario:thinking]", sessionId=started["session"]["id"])
            thinking_events = await collect_until_run_ends(sub, thought["run"]["id"])

        workspace = workspace_of(stack.data_dir, started["session"]["id"])
        assert (workspace / "hello.txt").read_text() == "hello\n"
        tool_uses = [
            b
            for e in events
            if e["payload"]["__typename"] == "AssistantMessage"
            for b in e["payload"]["content"]
            if b["__typename"] == "ToolUseBlock"
        ]
        assert [t["name"] for t in tool_uses] == ["Write"]
        assert tool_uses[0]["input"]["content"] == "hello\n"
        results = [
            b
            for e in events
            if e["payload"]["__typename"] == "UserMessage"
            for b in e["payload"]["content"]
            if b["__typename"] == "ToolResultBlock"
        ]
        assert [r["toolUseId"] for r in results] == [tool_uses[0]["id"]]
        assert not results[0]["isError"]
        thinking = [
            b
            for e in thinking_events
            if e["payload"]["__typename"] == "AssistantMessage"
            for b in e["payload"]["content"]
            if b["__typename"] == "ThinkingBlock"
        ]
        assert thinking
        assert "characters" in thinking[0]["thinking"]

    async def test_structured_output_follows_the_schema(self, stack: Stack) -> None:
        schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
        scenario = {
            "steps": [
                {"content": [{"type": "tool_use", "name": "StructuredOutput", "input": {"answer": 42}}]},
                {"content": [{"type": "text", "text": "done"}]},
            ]
        }
        async with stack.client() as client:
            started = await start_ok(client, prompt="[scenario]" + json.dumps(scenario), outputSchema=schema)
            run = await wait_for_run(client, started["run"]["id"])
        assert run["status"] == "COMPLETED", run
        assert run["result"]["structuredOutput"] == {"answer": 42}


@pytest.mark.parametrize("count", [3])
async def test_sessions_list_newest_first_with_cursors(stack: Stack, count: int) -> None:
    query = """
    query List($first: Int, $after: String, $filter: SessionFilter) {
      sessions(first: $first, after: $after, filter: $filter) {
        edges { cursor node { id title } } pageInfo { hasNextPage endCursor }
      }
    }"""
    marker = f"listing-{stack.mode}"
    async with stack.client() as client:
        made = [(await start_ok(client, prompt=f"{marker} {i}"))["session"]["id"] for i in range(count)]
        seen: list[str] = []
        after = None
        while True:
            page = (
                await client.execute(query, {"first": 2, "after": after, "filter": {"titleContains": marker}})
            )["sessions"]
            seen.extend(edge["node"]["id"] for edge in page["edges"])
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        for session_id in made:
            await wait_for_run_of_session(client, session_id)
    assert seen == list(reversed(made))


async def wait_for_run_of_session(client: object, session_id: str) -> None:
    from tests.support.graphql_http import GraphQLHttpClient

    assert isinstance(client, GraphQLHttpClient)
    session = (await client.execute(SESSION, {"id": session_id}))["session"]
    for edge in session["runs"]["edges"]:
        await wait_for_run(client, edge["node"]["id"])
