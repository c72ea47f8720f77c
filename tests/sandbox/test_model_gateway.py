"""The model gateway: the only thing a sandbox can reach. It honours a pass only while the pass is open,
swaps it for the operator's key, forwards only the model API, and streams answers back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.sandbox import upstream as upstream_module
from api.sandbox.model_gateway import ModelGateway, Pass, Upstream
from api.uvicorn_task import UvicornTask

# Set when the upstream's endless stream ends: its caller went away.
ENDLESS_CLOSED: list[asyncio.Event] = []


async def echo(request: Request) -> Response:
    if request.url.path.endswith("/stream"):

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")
    if request.url.path.endswith("/endless"):
        closed = asyncio.Event()
        ENDLESS_CLOSED.append(closed)

        async def endless() -> AsyncIterator[bytes]:
            try:
                yield b"data: 0\n\n"
                await asyncio.Event().wait()  # a turn that streams on and on
            finally:
                closed.set()

        return StreamingResponse(endless(), media_type="text/event-stream")
    if "/status/" in request.url.path:
        status = int(request.url.path.rsplit("/", 1)[1])
        return JSONResponse({"type": "error"}, status_code=status, headers={"retry-after": "7"})
    assert request.client is not None
    return JSONResponse(
        {
            "path": request.url.path,
            "query": request.url.query,
            "x-api-key": request.headers.get("x-api-key"),
            "authorization": request.headers.get("authorization"),
            "custom": request.headers.getlist("x-custom"),
            "content-length": request.headers.get("content-length"),
            "transfer-encoding": request.headers.get("transfer-encoding"),
            "client-port": request.client.port,
            "body": (await request.body()).decode(),
        }
    )


def echo_server(**config: Any) -> UvicornTask:
    return UvicornTask(
        Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])]),
        name="upstream",
        log_level="warning",
        lifespan="off",
        **config,
    )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ModelGateway]:
    upstream = echo_server()
    await upstream.start()
    gateway = ModelGateway(
        Upstream(
            base_url=f"http://127.0.0.1:{upstream.port}/prefix",
            api_key="operator-key",
            extra_headers={"x-custom": "operator-header"},
        ),
        tmp_path / "gw.sock",
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
        await upstream.stop()


def client(gateway: ModelGateway, token: str | None) -> httpx.AsyncClient:
    headers = {"x-api-key": token} if token else {}
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(gateway.socket_path)),
        base_url="http://sandbox",
        headers=headers,
    )


async def test_an_open_pass_is_swapped_for_the_operators_key(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        answer = await http.post("/v1/messages?beta=true", content=b'{"model":"m"}')
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["path"] == "/prefix/v1/messages"
    assert seen["query"] == "beta=true"
    assert seen["x-api-key"] == "operator-key"
    assert seen["custom"] == ["operator-header"]
    assert seen["body"] == '{"model":"m"}'
    assert issued.token not in str(seen)


async def test_streams_come_back_as_they_are(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        answer = await http.get("/v1/stream")
    assert answer.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize("state", ["missing", "unknown", "closed", "revoked"])
async def test_a_pass_outside_its_run_opens_nothing(gateway: ModelGateway, state: str) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    token: str | None = {"missing": None, "unknown": "cagw-guessed"}.get(state, issued.token)
    if state == "closed":
        issued.open = False
    if state == "revoked":
        gateway.revoke(issued)
    async with client(gateway, token) as http:
        answer = await http.post("/v1/messages", content=b"{}")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"


async def test_only_the_model_api_is_forwarded(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        for path in ("/admin", "/v1/../internal", "/"):
            answer = await http.get(path)
            assert answer.status_code in {403, 404}, path
            assert "operator-key" not in answer.text


async def test_an_unreachable_upstream_is_a_clean_502(tmp_path: Path) -> None:
    gateway = ModelGateway(Upstream(base_url="http://127.0.0.1:9"), tmp_path / "gw.sock")
    await gateway.start()
    try:
        issued = gateway.issue("s")
        issued.open = True
        async with client(gateway, issued.token) as http:
            answer = await http.post("/v1/messages", content=b"{}")
        assert answer.status_code == 502
        assert answer.json()["error"]["type"] == "api_error"
    finally:
        await gateway.stop()


def test_upstream_reads_the_operators_environment() -> None:
    upstream = Upstream.from_environment(
        {
            "ANTHROPIC_BASE_URL": "https://models.example/",
            "ANTHROPIC_AUTH_TOKEN": "tok",
            "ANTHROPIC_CUSTOM_HEADERS": "X-A: 1\nbad line\nX-B:two",
        }
    )
    assert upstream.base_url == "https://models.example"
    assert upstream.auth_headers() == {"X-A": "1", "X-B": "two", "authorization": "Bearer tok"}
    assert Upstream.from_environment({}).base_url == "https://api.anthropic.com"


async def test_a_held_pass_makes_calls_wait_for_the_begin_and_then_go_or_fail(gateway: ModelGateway) -> None:
    """Pass.hold(): a follow-up's prompt went to its CLI while its run commits; the CLI's model call
    waits, and goes on once the run committed, or is refused if it did not (or the pass is revoked)."""
    committed, failed, revoked = (gateway.issue(f"session-{n}") for n in range(3))
    for issued in (committed, failed, revoked):
        issued.hold()
    async with (
        client(gateway, committed.token) as a,
        client(gateway, failed.token) as b,
        client(gateway, revoked.token) as c,
    ):
        calls = [asyncio.create_task(http.post("/v1/messages", content=b"{}")) for http in (a, b, c)]
        # Each is at the gateway, waiting: neither answered nor refused while the begin commits.
        await until(lambda: all(waiters(issued) for issued in (committed, failed, revoked)))
        assert not any(call.done() for call in calls)
        committed.settle(open=True)
        failed.settle(open=False)
        gateway.revoke(revoked)
        answers = await asyncio.gather(*calls)
    assert [answer.status_code for answer in answers] == [200, 401, 401]
    assert answers[0].json()["x-api-key"] == "operator-key"


def waiters(issued: Pass) -> bool:
    settled = issued._settled
    return settled is not None and bool(getattr(settled, "_waiters", None))


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the calls did not reach the gateway"
        await asyncio.sleep(0.01)


async def test_a_body_goes_on_with_its_length_and_a_large_one_streams_through(
    gateway: ModelGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model cannot start before it has the whole request: a body comes in whole and goes on with its
    length, even one the CLI sent chunked. Beyond BUFFERED_BODY_BYTES it streams (the server holds no
    more than that of a call), with the CLI's length if it gave one."""
    monkeypatch.setattr(upstream_module, "BUFFERED_BODY_BYTES", 1000)
    issued = gateway.issue("session-1")
    issued.open = True
    small, large = b'{"small": true}', b'{"large": "' + b"x" * 300_000 + b'"}'

    async def pieces(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    async with client(gateway, issued.token) as http:
        answers = [
            await http.post("/v1/messages", content=small),
            await http.post("/v1/messages", content=pieces(small)),
            await http.post("/v1/messages", content=large),
            await http.post("/v1/messages", content=pieces(large)),
        ]
    seen = [answer.json() for answer in answers]
    assert [s["body"].encode() for s in seen] == [small, small, large, large]
    framing = [(s["content-length"], s["transfer-encoding"]) for s in seen]
    assert framing == [
        (str(len(small)), None),
        (str(len(small)), None),
        (str(len(large)), None),
        (None, "chunked"),
    ]


async def test_calls_share_a_kept_alive_upstream_connection(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        ports = [(await http.post("/v1/messages", content=b"{}")).json()["client-port"] for _ in range(3)]
    assert len(set(ports)) == 1


async def test_the_operators_headers_replace_the_clis(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        answer = await http.post(
            "/v1/messages",
            content=b"{}",
            headers={"X-Custom": "from-the-cli", "Authorization": "Bearer cli-token"},
        )
    seen = answer.json()
    assert seen["custom"] == ["operator-header"]
    assert seen["authorization"] is None
    assert seen["x-api-key"] == "operator-key"


async def test_an_upstream_error_comes_back_as_it_is(gateway: ModelGateway) -> None:
    issued = gateway.issue("session-1")
    issued.open = True
    async with client(gateway, issued.token) as http:
        answer = await http.post("/v1/status/529", content=b"{}")
    assert answer.status_code == 529
    assert answer.headers["retry-after"] == "7"
    # The model API's headers, not the gateway's server's beside them.
    assert len(answer.headers.get_list("date")) == 1
    assert answer.json() == {"type": "error"}


async def test_a_cli_that_goes_away_ends_its_upstream_stream(gateway: ModelGateway) -> None:
    """A stream of a long turn whose CLI disconnected (its turn interrupted, the CLI killed) must not go
    on costing the operator tokens until the model finishes."""
    issued = gateway.issue("session-1")
    issued.open = True
    ENDLESS_CLOSED.clear()
    async with client(gateway, issued.token) as http, http.stream("POST", "/v1/endless") as answer:
        async for chunk in answer.aiter_bytes():
            assert chunk == b"data: 0\n\n"
            break
        assert ENDLESS_CLOSED
        assert not ENDLESS_CLOSED[0].is_set()
    # The CLI's connection is closed: the upstream's stream ends.
    await asyncio.wait_for(ENDLESS_CLOSED[0].wait(), 10)


async def test_the_upstream_is_reached_through_the_environments_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY of the server's environment, as httpx's client honoured it: the upstream's name does
    not resolve, only the proxy (the echo server, which answers an absolute-form request as any other)
    can answer."""
    proxy = echo_server()
    await proxy.start()
    for name in ("http_proxy", "all_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    gateway = ModelGateway(
        Upstream(base_url="http://model.invalid/prefix", api_key="k"), tmp_path / "gw.sock"
    )
    await gateway.start()
    try:
        issued = gateway.issue("s")
        issued.open = True
        async with client(gateway, issued.token) as http:
            answer = await http.post("/v1/messages", content=b"{}")
        assert answer.status_code == 200
        assert answer.json()["path"] == "/prefix/v1/messages"
    finally:
        await gateway.stop()
        await proxy.stop()


async def test_large_bodies_go_through_whole_both_ways(gateway: ModelGateway) -> None:
    """Megabytes each way (an image-laden request, the echo of it): more than the gateway buffers of a
    request, more than its upstream connection reads ahead of the CLI (api/sandbox/network.py pauses
    reading the socket then), and nothing lost or reordered."""
    issued = gateway.issue("session-1")
    issued.open = True
    body = bytes(range(256)) * (12 * 1024 * 1024 // 256)
    async with client(gateway, issued.token) as http:
        answer = await http.post("/v1/messages", content=body.hex().encode(), timeout=60)
    seen = answer.json()
    assert seen["content-length"] == str(2 * len(body))
    assert bytes.fromhex(seen["body"]) == body
