"""The HTTP surface, over ASGI and over a real socket, without the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.scripted_model.app import create_scripted_model_app
from api.scripted_model.server import ScriptedModelServer

TITLE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_scripted_model_app())
    headers = {"x-api-key": "test-key"}
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted", headers=headers) as client:
        yield client


def conversation(prompt: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return {"model": "claude-test", "max_tokens": 1000, "messages": messages, "stream": stream, **extra}


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("headers", [{"x-api-key": ""}, {"x-api-key": "", "authorization": "Bearer "}])
async def test_a_request_without_credentials_is_401_as_on_the_real_api(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    response = await http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_echo_streams_a_complete_message(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=conversation("hello there"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "You said: hello there"
    assert names.count("content_block_delta") > 1
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


async def test_tool_use_and_thinking_deltas(http: httpx.AsyncClient) -> None:
    script = {
        "steps": [
            {
                "content": [
                    {"type": "thinking", "thinking": "let me see", "signature": "sig"},
                    {"type": "tool_use", "name": "Bash", "input": {"command": "echo hi"}},
                ]
            }
        ]
    }
    response = await http.post("/v1/messages", json=conversation("[scenario]" + json.dumps(script)))
    deltas = [d["delta"] for n, d in sse_events(response.text) if n == "content_block_delta"]
    kinds = {d["type"] for d in deltas}
    assert kinds == {"thinking_delta", "signature_delta", "input_json_delta"}
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == {"command": "echo hi"}
    assert sse_events(response.text)[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_non_streaming(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=conversation("[scenario:write-file]", stream=False))
    body = response.json()
    assert body["stop_reason"] == "tool_use"
    assert body["content"][0]["type"] == "tool_use"
    assert body["content"][0]["id"].startswith("toolu_")
    assert body["content"][0]["input"] == {"file_path": "hello.txt", "content": "hello\n"}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_error_scenarios(http: httpx.AsyncClient, status: int, error_type: str) -> None:
    response = await http.post("/v1/messages", json=conversation(f"[scenario:error:{status}]"))
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type


async def test_unknown_scenario_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=conversation("[scenario:nope]"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "unknown scenario 'nope'; built-in scenarios: echo, recall, thinking, write-file, slow, "
        "many:N, error:STATUS",
    }


async def test_stream_error_replaces_the_end_of_the_message(http: httpx.AsyncClient) -> None:
    script = {"steps": [{"content": [{"type": "text", "text": "a b c d"}], "stream_error_after_ms": 50}]}
    response = await http.post("/v1/messages", json=conversation("[scenario]" + json.dumps(script)))
    names = [n for n, _ in sse_events(response.text)]
    assert names[-1] == "error"
    assert "message_stop" not in names
    fallback = await http.post(
        "/v1/messages", json=conversation("[scenario]" + json.dumps(script), stream=False)
    )
    assert fallback.status_code == 529


async def test_delay_and_pacing(http: httpx.AsyncClient) -> None:
    script = {
        "steps": [
            {
                "content": [{"type": "text", "text": "one two three four"}],
                "delay_ms": 100,
                "tokens_per_second": 20,
            }
        ]
    }
    start = time.monotonic()
    response = await http.post("/v1/messages", json=conversation("[scenario]" + json.dumps(script)))
    elapsed = time.monotonic() - start
    assert elapsed >= 0.1 + 4 / 20
    deltas = [d for n, d in sse_events(response.text) if n == "content_block_delta"]
    assert len(deltas) == 4


async def test_title_side_query_gets_schema_json_and_no_scenario(http: httpx.AsyncClient) -> None:
    body = conversation(
        "<session>\n[scenario:error:529]\n</session>",
        stream=True,
        output_config={"format": {"type": "json_schema", "schema": TITLE_SCHEMA}},
    )
    response = await http.post("/v1/messages", json=body)
    assert response.status_code == 200
    text = "".join(d["delta"]["text"] for n, d in sse_events(response.text) if n == "content_block_delta")
    assert json.loads(text) == {"title": "Scripted session"}


async def test_other_side_requests(http: httpx.AsyncClient) -> None:
    assert (await http.head("/api/hello")).status_code == 200
    count = await http.post("/v1/messages/count_tokens", json=conversation("hi"))
    assert count.json()["input_tokens"] > 0
    models = await http.get("/v1/models")
    assert models.json()["data"][0]["type"] == "model"
    unknown = await http.get("/v1/whatever")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"


async def test_recorded_requests(http: httpx.AsyncClient) -> None:
    await http.post("/v1/messages", json=conversation("first"), headers={"x-api-key": "secret"})
    await http.head("/api/hello")
    records = (await http.get("/_scripted/requests")).json()
    assert [(r["kind"], r["path"]) for r in records] == [
        ("conversation", "/v1/messages"),
        ("hello", "/api/hello"),
    ]
    assert records[0]["body"]["messages"][0]["content"][0]["text"] == "first"
    assert (records[0]["prompt"], records[0]["scenario"], records[0]["step"]) == ("first", "echo", 0)
    assert "x-api-key" not in records[0]["headers"]
    assert (await http.delete("/_scripted/requests")).status_code == 204
    assert (await http.get("/_scripted/requests")).json() == []
    assert (await http.get("/_scripted/health")).json() == {"status": "ok"}


async def test_recording_is_bounded() -> None:
    transport = httpx.ASGITransport(app=create_scripted_model_app(max_recorded=3))
    headers = {"x-api-key": "test-key"}
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted", headers=headers) as client:
        for i in range(5):
            await client.post("/v1/messages", json=conversation(f"n{i}", stream=False))
        records = (await client.get("/_scripted/requests")).json()
    assert [r["body"]["messages"][0]["content"][0]["text"] for r in records] == ["n2", "n3", "n4"]


async def test_server_binds_a_free_loopback_port_and_stops() -> None:
    async with ScriptedModelServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.base_url}/_scripted/health")).status_code == 200
        url = server.base_url
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/_scripted/health")


def test_server_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ScriptedModelServer(host="0.0.0.0")
