"""Outbound access for tools: only through the egress proxy, only to the operator's allow-list, and only
while the session's run executes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.sandbox.test_confinement import probe_lines, run_bash

TUNNEL = """
tunnel() {{
  exec 3<>/dev/tcp/127.0.0.1/8788 || {{ echo "$1=no-proxy"; return; }}
  auth=$(printf 'agent:%s' "$ANTHROPIC_API_KEY" | base64 -w0)
  printf 'CONNECT %s HTTP/1.1\\r\\nProxy-Authorization: Basic %s\\r\\n\\r\\n' "$2" "$auth" >&3
  read -r -t 10 status <&3
  code=$(echo "$status" | cut -d' ' -f2)
  if [ "$code" = 200 ]; then
    read -r -t 10 blank <&3
    echo ping >&3
    read -r -t 10 answer <&3
    echo "$1=$answer"
  else
    echo "$1=$code"
  fi
  exec 3<&-
}}
tunnel listed 127.0.0.1:{port}
tunnel other_port 127.0.0.1:{other}
tunnel unlisted_name internal.invalid:443
"""


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"pong:" + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def egress_stack(
    tmp_path: Path, scripted_model: ScriptedModelServer, echo_server: int
) -> AsyncIterator[Stack]:
    running = await start_stack(
        "embedded", tmp_path, scripted_model, sandbox_egress_hosts=[f"127.0.0.1:{echo_server}"]
    )
    try:
        yield running
    finally:
        await running.api.stop()


async def test_tools_reach_only_allow_listed_hosts(egress_stack: Stack, echo_server: int) -> None:
    output, _ = await run_bash(
        egress_stack, egress_stack.key, TUNNEL.format(port=echo_server, other=echo_server + 1)
    )
    probes = probe_lines(output)
    assert probes["listed"] == "pong:ping", output
    assert probes["other_port"] == "403", output
    assert probes["unlisted_name"] == "403", output


async def test_without_an_allow_list_there_is_no_way_out(stack: Stack, echo_server: int) -> None:
    output, _ = await run_bash(stack, stack.key, TUNNEL.format(port=echo_server, other=echo_server + 1))
    assert probe_lines(output)["listed"] == "no-proxy", output


async def connect_through(proxy: Path, target: str, token: str | None) -> bytes:
    import base64

    reader, writer = await asyncio.open_unix_connection(str(proxy))
    auth = f"Proxy-Authorization: Basic {base64.b64encode(f'agent:{token}'.encode()).decode()}\r\n"
    writer.write(f"CONNECT {target} HTTP/1.1\r\n{auth if token else ''}\r\n".encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return status


@pytest.mark.parametrize(
    ("allowed", "target", "pass_open", "expected"),
    [
        (["127.0.0.1:{port}"], "127.0.0.1:{port}", True, b"200"),
        (["127.0.0.1:{port}"], "127.0.0.1:{port}", False, b"407"),
        # A listed name that resolves to loopback opens nothing: only a listed address may be private.
        (["localhost:{port}"], "localhost:{port}", True, b"403"),
        (["*.example.invalid"], "127.0.0.1:{port}", True, b"403"),
    ],
)
async def test_the_proxy_checks_pass_host_port_and_resolved_address(
    tmp_path: Path, echo_server: int, allowed: list[str], target: str, pass_open: bool, expected: bytes
) -> None:
    from api.sandbox.egress import EgressProxy
    from api.sandbox.model_gateway import Pass

    issued = Pass(session_id="s", token="cagw-test", open=pass_open)
    proxy = EgressProxy(
        [entry.format(port=echo_server) for entry in allowed],
        tmp_path / "egress.sock",
        lambda token: issued if token == issued.token else None,
    )
    await proxy.start()
    try:
        status = await connect_through(
            tmp_path / "egress.sock", target.format(port=echo_server), issued.token
        )
    finally:
        await proxy.stop()
    assert status.split()[1] == expected, status
