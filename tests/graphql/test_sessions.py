"""Checkpoints, rewind, fork, the session lifecycle and per-run cost: the real CLI in its sandbox, the
scripted model, on both storage modes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from api.control.commands import CloseSession
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run, workspace_of
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient

# Only the error types each union holds may be spread.
BUSY_FIELDS = """
  ... on Error { __typename code message }
  ... on NotFoundError { resource resourceId }
  ... on SessionBusyError { sessionId activeRunId }
"""
INVALID_FIELDS = """
  ... on Error { __typename code message }
  ... on NotFoundError { resource resourceId }
  ... on ValidationError { field }
"""

REWIND = (
    """
mutation Rewind($input: RewindFilesInput!) {
  rewindFiles(input: $input) {
    __typename
    ... on RewindFilesSuccess { filesChanged insertions deletions applied }
    ... on CheckpointUnavailableError { checkpointId reason }
"""
    + BUSY_FIELDS
    + "  }\n}\n"
)

FORK = (
    """
mutation Fork($input: ForkSessionInput!) {
  forkSession(input: $input) {
    __typename
    ... on ForkSessionSuccess { session { id title status forkedFrom { id } } }
"""
    + BUSY_FIELDS
    + "    ... on ValidationError { field }\n"
    + "  }\n}\n"
)

DELETE = (
    """
mutation Delete($id: ID!) {
  deleteSession(sessionId: $id) {
    __typename
    ... on DeleteSessionSuccess { deletedSessionId }
"""
    + BUSY_FIELDS
    + "  }\n}\n"
)

UPDATE_FIELDS = (
    """
    __typename
    ... on UpdateSessionSuccess { session { id title tags archived archivedAt } }
"""
    + INVALID_FIELDS
)

LIFECYCLE = f"""
mutation Lifecycle($id: ID!, $title: String!, $tags: [String!]!) {{
  renameSession(sessionId: $id, title: $title) {{ {UPDATE_FIELDS} }}
  setSessionTags(sessionId: $id, tags: $tags) {{ {UPDATE_FIELDS} }}
  archiveSession(sessionId: $id) {{ {UPDATE_FIELDS} }}
}}
"""

UNARCHIVE = f"""
mutation Unarchive($id: ID!) {{ unarchiveSession(sessionId: $id) {{ {UPDATE_FIELDS} }} }}
"""

SESSIONS = """
query Sessions($filter: SessionFilter) {
  sessions(first: 100, filter: $filter) { edges { node { id title tags archived } } }
}
"""

SESSION = """
query Session($id: ID!) {
  session(id: $id) {
    id totalCostUsd forkedFrom { id }
    checkpoints { id runId }
    runs(first: 50) { edges { node { id status costUsd usage checkpointId result { totalCostUsd } } } }
  }
}
"""

EVENTS = """
query Events($id: ID!) {
  events(sessionId: $id, first: 1000) {
    seq runId
    payload {
      __typename
      ... on FilesRewound { checkpointId filesChanged conversation }
      ... on AssistantMessage { uuid content { __typename ... on TextBlock { text } } }
    }
  }
}
"""

AUDIT = """
query Audit($filter: AuditFilter) {
  auditLog(filter: $filter, first: 100) { edges { node { action targetId details } } }
}
"""


def write_script(path: Path, content: str) -> str:
    """A prompt whose turn reads the file (the Write tool wants that) and writes `content` to it."""
    steps = [
        {"content": [{"type": "tool_use", "name": "Read", "input": {"file_path": str(path)}}]},
        {
            "content": [
                {"type": "tool_use", "name": "Write", "input": {"file_path": str(path), "content": content}}
            ]
        },
        {"content": [{"type": "text", "text": "Written."}]},
    ]
    return "[scenario]" + json.dumps({"steps": steps})


async def turn(client: GraphQLHttpClient, prompt: str, session_id: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": prompt, "permissionMode": "ACCEPT_EDITS"}
    if session_id is not None:
        fields["sessionId"] = session_id
    started = await start_ok(client, **fields)
    run = await wait_for_run(client, started["run"]["id"], timeout=120)
    assert run["status"] == "COMPLETED", run
    return {"session_id": started["session"]["id"], "checkpoint": started["run"]["checkpointId"], **run}


async def two_writes(stack: Stack, client: GraphQLHttpClient) -> tuple[str, str, str, Path]:
    """A session whose first turn writes hello.txt = "hello\\n" and whose second overwrites it."""
    first = await turn(client, "[scenario:write-file]")
    session_id = first["session_id"]
    hello = workspace_of(stack.data_dir, session_id) / "hello.txt"
    assert hello.read_text() == "hello\n"
    second = await turn(client, write_script(hello, "second version\n"), session_id)
    assert hello.read_text() == "second version\n"
    return session_id, first["checkpoint"], second["checkpoint"], hello


async def rewind(client: GraphQLHttpClient, session_id: str, checkpoint: str, **flags: Any) -> dict[str, Any]:
    data = await client.execute(
        REWIND, {"input": {"sessionId": session_id, "checkpointId": checkpoint, **flags}}
    )
    result: dict[str, Any] = data["rewindFiles"]
    return result


async def stop_agent(stack: Stack, session_id: str) -> None:
    """Stop the session's idle CLI, as its replica does after IDLE_CLIENT_SECONDS."""
    router = stack.api.services.session_control.router
    answer = await router.ask(CloseSession(session_id, reply_to=f"reply:{uuid.uuid4()}"), timeout=30)
    assert answer == {"closed": True}, answer


async def audit_actions(client: GraphQLHttpClient, target_id: str) -> list[str]:
    data = await client.execute(AUDIT, {"filter": {"targetId": target_id}})
    return [edge["node"]["action"] for edge in data["auditLog"]["edges"]]


class TestRewind:
    async def test_a_dry_run_previews_and_a_rewind_restores_each_checkpoint(self, stack: Stack) -> None:
        async with stack.client() as client:
            session_id, first, second, hello = await two_writes(stack, client)

            preview = await rewind(client, session_id, second, dryRun=True)
            assert preview == {
                "__typename": "RewindFilesSuccess",
                "filesChanged": ["hello.txt"],
                "insertions": 1,
                "deletions": 1,
                "applied": False,
            }
            assert hello.read_text() == "second version\n"

            back_one = await rewind(client, session_id, second)
            assert back_one["__typename"] == "RewindFilesSuccess"
            assert back_one["applied"] is True
            assert hello.read_text() == "hello\n"

            # Before the first prompt the file did not exist: rewinding there removes it.
            back_all = await rewind(client, session_id, first)
            assert back_all["filesChanged"] == ["hello.txt"]
            assert not hello.exists()

            events = (await client.execute(EVENTS, {"id": session_id}))["events"]
            rewound = [e["payload"] for e in events if e["payload"]["__typename"] == "FilesRewound"]
            assert rewound == [
                {
                    "__typename": "FilesRewound",
                    "checkpointId": second,
                    "filesChanged": ["hello.txt"],
                    "conversation": False,
                },
                {
                    "__typename": "FilesRewound",
                    "checkpointId": first,
                    "filesChanged": ["hello.txt"],
                    "conversation": False,
                },
            ]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            # Only applied rewinds are audited (a dry run changes nothing).
            assert (await audit_actions(client, session_id)).count("session.rewind") == 2

            # The session goes on as before.
            await turn(client, "after the rewind", session_id)

    async def test_a_rewind_works_after_the_sessions_agent_stopped(self, stack: Stack) -> None:
        async with stack.client() as client:
            session_id, _first, second, hello = await two_writes(stack, client)
            await stop_agent(stack, session_id)
            assert session_id not in stack.api.services.run_manager._actors

            result = await rewind(client, session_id, second)
            assert result["__typename"] == "RewindFilesSuccess", result
            assert hello.read_text() == "hello\n"

    async def test_unknown_checkpoints_other_tenants_and_busy_sessions_are_refused(
        self, stack: Stack
    ) -> None:
        async with stack.client() as client, stack.client(stack.other_key) as other:
            session_id, first, _second, hello = await two_writes(stack, client)

            unknown = await rewind(client, session_id, str(uuid.uuid4()))
            assert unknown["__typename"] == "NotFoundError"
            assert unknown["resource"] == "Checkpoint"
            foreign = await rewind(other, session_id, first)
            assert foreign["__typename"] == "NotFoundError"
            assert foreign["resource"] == "Session"

            slow = await start_ok(client, prompt="[scenario:slow]", sessionId=session_id)
            busy = await rewind(client, session_id, first)
            assert busy["__typename"] == "SessionBusyError", busy
            assert busy["activeRunId"] == slow["run"]["id"]
            fork = (await client.execute(FORK, {"input": {"sessionId": session_id}}))["forkSession"]
            assert fork["__typename"] == "SessionBusyError", fork
            await wait_for_run(client, slow["run"]["id"], timeout=120)
            assert hello.read_text() == "second version\n"

    async def test_the_conversation_can_go_back_with_the_files(
        self, stack: Stack, scripted_model: ScriptedModelServer
    ) -> None:
        async with stack.client() as client:
            session_id, first, second, hello = await two_writes(stack, client)
            refused = await rewind(client, session_id, first, conversation=True)
            assert refused["__typename"] == "CheckpointUnavailableError", refused
            assert hello.read_text() == "second version\n"

            result = await rewind(client, session_id, second, conversation=True)
            assert result["__typename"] == "RewindFilesSuccess", result
            assert hello.read_text() == "hello\n"
            # The next turn sees the conversation as it was before the second prompt.
            question = f"what came before? {uuid.uuid4()}"
            await turn(client, question, session_id)
            prompt_texts = _user_texts(await _model_requests(scripted_model), question)
            assert any("[scenario:write-file]" in text for text in prompt_texts)
            assert not any("second version" in text for text in prompt_texts)


async def _model_requests(model: ScriptedModelServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{model.base_url}/_scripted/requests")).json()
    requests = body if isinstance(body, list) else body["requests"]
    return [r for r in requests if r.get("kind") == "conversation"]


def _user_texts(requests: list[dict[str, Any]], prompt: str) -> list[str]:
    """The texts of every message the model was sent with `prompt` as the newest one."""
    for request in reversed(requests):
        if request.get("prompt") == prompt:
            return [json.dumps(m.get("content")) for m in request["body"]["messages"]]
    raise AssertionError(f"no model request for {prompt!r}")


class TestFork:
    async def test_a_fork_takes_its_own_turns_and_the_parent_stays_as_it_was(
        self, stack: Stack, scripted_model: ScriptedModelServer
    ) -> None:
        async with stack.client() as client:
            parent = await turn(client, "[scenario:write-file]")
            parent_id = parent["session_id"]
            parent_hello = workspace_of(stack.data_dir, parent_id) / "hello.txt"

            forked = (await client.execute(FORK, {"input": {"sessionId": parent_id}}))["forkSession"]
            assert forked["__typename"] == "ForkSessionSuccess", forked
            child_id = forked["session"]["id"]
            assert forked["session"]["forkedFrom"] == {"id": parent_id}
            child_hello = workspace_of(stack.data_dir, child_id) / "hello.txt"
            assert child_hello.read_text() == "hello\n"

            await turn(client, write_script(child_hello, "the fork's own\n"), child_id)
            another = f"another fork turn {uuid.uuid4()}"
            await turn(client, another, child_id)
            assert child_hello.read_text() == "the fork's own\n"
            assert parent_hello.read_text() == "hello\n"

            # The fork's conversation carries the parent's: its model request holds the first prompt.
            requests = await _model_requests(scripted_model)
            assert any("[scenario:write-file]" in t for t in _user_texts(requests, another))
            # Its copy of the parent's transcript has served: only the fork's own remains.
            transcripts = list((workspace_of(stack.data_dir, child_id).parent / "agent").rglob("*.jsonl"))
            assert [path.name for path in transcripts] == [f"{child_id}.jsonl"]
            # After its agent stopped, the fork resumes its own conversation (its own transcript).
            await stop_agent(stack, child_id)
            resumed = f"fork resumed {uuid.uuid4()}"
            await turn(client, resumed, child_id)
            resumed_texts = _user_texts(await _model_requests(scripted_model), resumed)
            assert any(another in t for t in resumed_texts)
            assert any("[scenario:write-file]" in t for t in resumed_texts)
            # The parent goes on untouched.
            await turn(client, "parent again", parent_id)
            assert parent_hello.read_text() == "hello\n"
            # The fork's checkpoints are its own, and rewind like any other.
            child = (await client.execute(SESSION, {"id": child_id}))["session"]
            first_own = child["checkpoints"][0]["id"]
            assert (await rewind(client, child_id, first_own))["__typename"] == "RewindFilesSuccess"
            assert child_hello.read_text() == "hello\n"
            assert "session.fork" in await audit_actions(client, child_id)

    async def test_a_fork_at_a_message_keeps_the_conversation_up_to_it(
        self, stack: Stack, scripted_model: ScriptedModelServer
    ) -> None:
        async with stack.client() as client:
            first = await turn(client, "first words")
            session_id = first["session_id"]
            await turn(client, "second words", session_id)
            events = (await client.execute(EVENTS, {"id": session_id}))["events"]
            first_answer = next(
                e["payload"]["uuid"]
                for e in events
                if e["runId"] == first["id"] and e["payload"]["__typename"] == "AssistantMessage"
            )
            forked = (
                await client.execute(FORK, {"input": {"sessionId": session_id, "atMessageId": first_answer}})
            )["forkSession"]
            assert forked["__typename"] == "ForkSessionSuccess", forked
            continues = f"fork continues {uuid.uuid4()}"
            await turn(client, continues, forked["session"]["id"])
            texts = _user_texts(await _model_requests(scripted_model), continues)
            assert any("first words" in t for t in texts)
            assert not any("second words" in t for t in texts)

            missing = (
                await client.execute(
                    FORK, {"input": {"sessionId": session_id, "atMessageId": str(uuid.uuid4())}}
                )
            )["forkSession"]
            assert missing["__typename"] == "NotFoundError"
            assert missing["resource"] == "Message"


class TestLifecycle:
    async def test_rename_tag_archive_and_a_filtered_listing(self, stack: Stack) -> None:
        tag = f"t-{uuid.uuid4().hex[:8]}"
        async with stack.client() as client:
            a = await turn(client, "session a")
            b = await turn(client, "session b")
            changed = await client.execute(
                LIFECYCLE, {"id": a["session_id"], "title": "Renamed", "tags": [tag, "x", tag]}
            )
            assert changed["renameSession"]["session"]["title"] == "Renamed"
            assert changed["setSessionTags"]["session"]["tags"] == [tag, "x"]
            assert changed["archiveSession"]["session"]["archived"] is True
            await client.execute(LIFECYCLE, {"id": b["session_id"], "title": "Other", "tags": [tag]})
            await client.execute(UNARCHIVE, {"id": b["session_id"]})

            async def listed(**filter: Any) -> list[str]:
                data = await client.execute(SESSIONS, {"filter": filter})
                return [edge["node"]["id"] for edge in data["sessions"]["edges"]]

            assert await listed(tag=tag) == [b["session_id"], a["session_id"]]
            assert await listed(tag=tag, archived=True) == [a["session_id"]]
            assert await listed(tag=tag, archived=False) == [b["session_id"]]
            assert await listed(tag=tag, status="IDLE", titleContains="Renam") == [a["session_id"]]
            assert await listed(tag="no-such-tag") == []
            assert await listed(tag=tag, createdAfter="2999-01-01T00:00:00+00:00") == []
            assert len(await listed(tag=tag, createdBefore="2999-01-01T00:00:00+00:00")) == 2

            blank = await client.execute(LIFECYCLE, {"id": a["session_id"], "title": " ", "tags": []})
            assert blank["renameSession"]["__typename"] == "ValidationError"
            actions = await audit_actions(client, a["session_id"])
            assert {"session.rename", "session.set_tags", "session.archive"} <= set(actions)

    async def test_delete_leaves_nothing_and_other_tenants_cannot(self, stack: Stack) -> None:
        async with stack.client() as client, stack.client(stack.other_key) as other:
            done = await turn(client, "[scenario:write-file]")
            session_id = done["session_id"]
            folder = workspace_of(stack.data_dir, session_id).parent
            assert (folder / "agent").is_dir()
            fork = (await client.execute(FORK, {"input": {"sessionId": session_id}}))["forkSession"]
            fork_hello = workspace_of(stack.data_dir, fork["session"]["id"]) / "hello.txt"

            foreign = (await other.execute(DELETE, {"id": session_id}))["deleteSession"]
            assert foreign["__typename"] == "NotFoundError"

            slow = await start_ok(client, prompt="[scenario:slow]", sessionId=session_id)
            busy = (await client.execute(DELETE, {"id": session_id}))["deleteSession"]
            assert busy["__typename"] == "SessionBusyError"
            await wait_for_run(client, slow["run"]["id"], timeout=120)

            # The agent is still connected (idle): delete stops it first.
            deleted = (await client.execute(DELETE, {"id": session_id}))["deleteSession"]
            assert deleted == {"__typename": "DeleteSessionSuccess", "deletedSessionId": session_id}
            assert not folder.exists()
            # Nothing under DATA_DIR is named after it but the fork's own copy of its conversation.
            fork_folder = workspace_of(stack.data_dir, fork["session"]["id"]).parent
            leftovers = [p for p in stack.data_dir.rglob(f"*{session_id}*") if fork_folder not in p.parents]
            assert leftovers == []
            assert not list(stack.data_dir.glob(f"tenants/*/sessions/{session_id}"))
            assert (await client.execute(SESSION, {"id": session_id}))["session"] is None
            assert session_id not in str(await client.execute(SESSIONS, {"filter": None}))
            gone = await client.execute("query R($id: ID!) { run(id: $id) { id } }", {"id": done["id"]})
            assert gone["run"] is None
            again = (await client.execute(DELETE, {"id": session_id}))["deleteSession"]
            assert again["__typename"] == "NotFoundError"
            assert "session.delete" in await audit_actions(client, session_id)
            # A fork keeps its own copy and forgets where it came from.
            kept = (await client.execute(SESSION, {"id": fork["session"]["id"]}))["session"]
            assert kept["forkedFrom"] is None
            assert fork_hello.read_text() == "hello\n"


class TestCost:
    async def test_each_run_carries_its_own_cost_and_two_turns_do_not_double_count(
        self, stack: Stack
    ) -> None:
        fixed = "[scenario]" + json.dumps(
            {
                "steps": [
                    {
                        "content": [{"type": "text", "text": "fixed"}],
                        "usage": {"input_tokens": 5000, "output_tokens": 200},
                    }
                ]
            }
        )
        async with stack.client() as client:
            first = await turn(client, fixed)
            session_id = first["session_id"]
            second = await turn(client, fixed, session_id)
            # A new CLI process resumes the session: its running total continues from the transcript.
            await stop_agent(stack, session_id)
            third = await turn(client, fixed, session_id)
            session = (await client.execute(SESSION, {"id": session_id}))["session"]

        runs = [edge["node"] for edge in session["runs"]["edges"]]
        assert [r["id"] for r in runs] == [first["id"], second["id"], third["id"]]
        costs = [r["costUsd"] for r in runs]
        assert all(cost is not None and cost > 0 for cost in costs), costs
        # The same usage costs the same, whichever turn and whichever CLI process it ran in.
        assert [r["usage"]["input_tokens"] for r in runs] == [5000, 5000, 5000]
        assert [r["usage"]["output_tokens"] for r in runs] == [200, 200, 200]
        assert max(costs) - min(costs) < 1e-9, costs
        # The agent's own running total ends at the sum of the runs: nothing counted twice.
        assert abs(sum(costs) - runs[2]["result"]["totalCostUsd"]) < 1e-9
        assert abs(session["totalCostUsd"] - sum(costs)) < 1e-9


class TestSessionChanges:
    async def test_fork_rename_and_delete_reach_the_tenants_feed(self, stack: Stack) -> None:
        feed_query = "subscription { sessionChanges { kind session { id title tags forkedFrom { id } } } }"
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws, stack.client() as client:
            feed = await ws.subscribe(feed_query)
            parent_id = (await turn(client, "feed me"))["session_id"]
            forked = (await client.execute(FORK, {"input": {"sessionId": parent_id}}))["forkSession"]
            child_id = forked["session"]["id"]
            await client.execute(LIFECYCLE, {"id": child_id, "title": "Fork renamed", "tags": ["feed"]})
            deleted = (await client.execute(DELETE, {"id": child_id}))["deleteSession"]
            assert deleted["__typename"] == "DeleteSessionSuccess", deleted

            seen: list[tuple[str, str | None]] = []
            while ("DELETED", "Fork renamed") not in seen:
                change = (await feed.next(timeout=30))["data"]["sessionChanges"]
                if change["session"]["id"] == child_id:
                    seen.append((change["kind"], change["session"]["title"]))
                    last = change["session"]
        # A change carries the session as it is when the change is read: on a loaded machine the rename
        # can commit before the creation's change is read (CREATED then shows the new title), and the
        # delete before the rename's (which then has no session left to show: the DELETED snapshot below
        # carries the rename).
        kinds = [kind for kind, _ in seen]
        assert kinds[0] == "CREATED", seen
        assert kinds[-1] == "DELETED", seen
        assert seen[0][1] in ("feed me (fork)", "Fork renamed"), seen
        assert all(kind == "UPDATED" and title == "Fork renamed" for kind, title in seen[1:-1]), seen
        # The deleted session as it was just before.
        assert last == {
            "id": child_id,
            "title": "Fork renamed",
            "tags": ["feed"],
            "forkedFrom": {"id": parent_id},
        }
