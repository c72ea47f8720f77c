"""Real clients against a running server: Apollo Client 4, urql 6 (default settings) and Python gql.

Each one starts a run that needs a permission, follows it over a graphql-transport-ws subscription, loses
its socket when the permission request arrives, answers the request while disconnected, resumes with
`afterSeq` and follows the run to its end. Every event must arrive exactly once, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from tests.clients.conftest import CLIENTS_DIR, NodePackage
from tests.conftest import Stack
from tests.documents import workspace_of

pytestmark = pytest.mark.timeout(600)

OPERATIONS = (CLIENTS_DIR / "operations.graphql").read_text()
TERMINAL = {"COMPLETED", "FAILED", "INTERRUPTED"}
QUERIES = {"PendingPermissions", "SessionSummary"}
MUTATIONS = {"StartRun", "DecidePermission"}


def check_journey(result: dict[str, Any], stack: Stack) -> None:
    before, after = result["beforeDrop"], result["afterResume"]
    # No gap and no duplicate across the reconnect: 1, 2, … N, resumed right after the last seq seen.
    assert before == list(range(1, len(before) + 1)), result
    assert after == list(range(before[-1] + 1, before[-1] + 1 + len(after))), result
    kinds = result["kinds"]
    assert kinds[len(before) - 1] == "PermissionRequested"
    assert "PermissionDecided" in kinds[len(before) :]
    assert "ResultMessage" in kinds[len(before) :]
    assert kinds[-1] == "RunStatusChanged"
    assert result["finalStatus"] == "COMPLETED"
    assert result["permission"]["toolName"] == "Write"
    assert result["permission"]["status"] == "PENDING"
    assert result["pendingWhileAway"] == [result["permission"]["id"]]
    assert result["decision"] == {"typename": "DecidePermissionSuccess", "status": "ALLOWED"}
    summary = result["summary"]
    assert summary["id"] == result["sessionId"]
    assert summary["lastSeq"] == after[-1]
    assert [edge["node"]["status"] for edge in summary["runs"]["edges"]] == ["COMPLETED"]
    # The decision reached the agent: the tool ran once allowed.
    assert (workspace_of(stack.data_dir, result["sessionId"]) / "hello.txt").read_text() == "hello\n"


def check_request_ids(requests: list[dict[str, Any]]) -> None:
    ids = [request["requestId"] for request in requests]
    assert all(ids), requests
    assert len(set(ids)) == len(ids), requests


async def run_node(node_package: NodePackage, script: str, stack: Stack) -> dict[str, Any]:
    env = {"API_URL": stack.api.base_url, "API_KEY": stack.key}
    return (await node_package.run(script, env=env)).json_line()


async def test_urql_with_default_settings(node_package: NodePackage, stack: Stack) -> None:
    result = await run_node(node_package, "urql.mjs", stack)
    check_journey(result, stack)
    assert result["connections"] == 2
    requests = result["requests"]
    # urql's default: queries as GET (within the URL limit), mutations as POST; the server takes both.
    assert {r["operation"]: r["method"] for r in requests} == {
        "StartRun": "POST",
        "DecidePermission": "POST",
        "PendingPermissions": "GET",
        "SessionSummary": "GET",
    }
    assert all(r["status"] == 200 for r in requests), requests
    check_request_ids(requests)


async def test_apollo_client_with_graphql_ws_and_persisted_queries(
    node_package: NodePackage, stack: Stack
) -> None:
    result = await run_node(node_package, "apollo.mjs", stack)
    check_journey(result, stack)
    assert result["connections"] == 2
    requests = result["requests"]
    assert all(r["status"] == 200 for r in requests), requests
    # Automatic persisted queries: a query goes first as a GET with its hash alone; a mutation is POSTed.
    for name in QUERIES:
        first = next(r for r in requests if r["operation"] == name)
        assert (first["method"], first["persisted"], first["withQuery"]) == ("GET", True, False), requests
    assert all(r["method"] == "POST" for r in requests if r["operation"] in MUTATIONS), requests
    # Once the server has stored the document, the hash alone is enough: one GET, no fallback.
    assert requests[-1]["operation"] == "SessionSummary"
    assert (requests[-1]["method"], requests[-1]["withQuery"]) == ("GET", False)
    assert requests[-2]["operation"] == "SessionSummary"
    assert result["repeatedSummary"] == result["summary"]
    check_request_ids(requests)


def is_end_of(run_id: str, payload: dict[str, Any]) -> bool:
    return (
        payload["__typename"] == "RunStatusChanged"
        and payload["runId"] == run_id
        and payload["status"] in TERMINAL
    )


def request(name: str, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(OPERATIONS, operation_name=name, variable_values=variables)


async def test_python_gql(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    http = Client(
        transport=HTTPXAsyncTransport(f"{stack.api.base_url}/graphql", headers=headers, trust_env=False),
        # gql introspects the schema and validates every document against it before sending.
        fetch_schema_from_transport=True,
    )

    def websocket() -> Client:
        transport = WebsocketsTransport(
            url=stack.api.ws_url,
            init_payload=headers,
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            connect_args={"proxy": None},
        )
        return Client(transport=transport)

    async with http as session:
        started = (await session.execute(request("StartRun", input={"prompt": "[scenario:write-file]"})))[
            "startRun"
        ]
        assert started["__typename"] == "StartRunSuccess", started
        session_id, run_id = started["session"]["id"], started["run"]["id"]

        before: list[dict[str, Any]] = []
        async with websocket() as ws:
            async for data in ws.subscribe(request("SessionEvents", sessionId=session_id, afterSeq=0)):
                before.append(data["sessionEvents"])
                if before[-1]["payload"]["__typename"] == "PermissionRequested":
                    break
        # The socket is closed: the decision and the rest of the run happen while nobody listens.
        permission = before[-1]["payload"]["request"]
        pending = (await session.execute(request("PendingPermissions", sessionId=session_id)))[
            "permissionRequests"
        ]
        decided = (
            await session.execute(
                request("DecidePermission", input={"requestId": permission["id"], "decision": "ALLOW"})
            )
        )["decidePermission"]

        after: list[dict[str, Any]] = []
        async with websocket() as ws:
            async for data in ws.subscribe(
                request("SessionEvents", sessionId=session_id, afterSeq=before[-1]["seq"])
            ):
                event = data["sessionEvents"]
                after.append(event)
                if is_end_of(run_id, event["payload"]):
                    break
        summary = (await session.execute(request("SessionSummary", id=session_id)))["session"]

    check_journey(
        {
            "sessionId": session_id,
            "beforeDrop": [event["seq"] for event in before],
            "afterResume": [event["seq"] for event in after],
            "kinds": [event["payload"]["__typename"] for event in before + after],
            "permission": permission,
            "pendingWhileAway": [item["id"] for item in pending],
            "decision": {"typename": decided["__typename"], "status": decided["request"]["status"]},
            "finalStatus": after[-1]["payload"]["status"],
            "summary": summary,
        },
        stack,
    )
