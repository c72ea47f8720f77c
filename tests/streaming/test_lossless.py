"""No watcher loses or repeats an event: across replicas, reconnects, Redis restarts and slow readers.

Real uvicorn processes on one PostgreSQL and one Redis (and the embedded default, one process); every
test asserts the exact seq list a client saw: 1..n, no gap, no duplicate, n = the session's lastSeq.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.documents import (
    RUN,
    SESSION,
    SESSION_EVENTS,
    collect_until_run_ends,
    start_ok,
    wait_for_run,
    watch,
)
from tests.support.cluster import cluster, paced_scenario
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient, Subscription
from tests.support.servers import postgres_available, redis_available

pytestmark = pytest.mark.timeout(240)

TOPOLOGIES = ["replicated", "embedded"]


def _needs_services(topology: str) -> None:
    if topology == "replicated" and not (postgres_available() and redis_available()):
        pytest.skip("PostgreSQL or Redis is not reachable on loopback")


def assert_exact(seqs: list[int], last_seq: int) -> None:
    assert seqs == list(range(1, last_seq + 1)), f"gaps or repeats: {_describe(seqs)} (lastSeq {last_seq})"


def _describe(seqs: list[int]) -> str:
    duplicates = sorted({s for s in seqs if seqs.count(s) > 1})
    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    return f"{len(seqs)} events, duplicates {duplicates[:10]}, missing {missing[:10]}"


async def last_seq(client: GraphQLHttpClient, session_id: str) -> int:
    return int((await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"])


async def read_events(sub: Subscription, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    return [(await sub.next(timeout=timeout))["data"]["sessionEvents"] for _ in range(count)]


@pytest.mark.parametrize("topology", TOPOLOGIES)
async def test_a_run_on_one_replica_is_watched_complete_from_the_other(topology: str, tmp_path: Path) -> None:
    _needs_services(topology)
    # Replica 1 executes no runs, so the run surely executes on replica 0 while replica 1 serves the watcher.
    async with cluster(
        tmp_path, embedded=topology == "embedded", per_replica=[{}, {"EXECUTE_RUNS": "false"}]
    ) as c:
        runner, watcher = c.replicas[0], c.replicas[-1]
        async with (
            GraphQLHttpClient(watcher.base_url, c.key) as client,
            GraphQLWSClient.connect(watcher.ws_url, token=c.key) as ws,
        ):
            started = await start_ok(client, prompt=paced_scenario(steps=10, delay_ms=30))
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            events = await collect_until_run_ends(sub, run_id)
            assert_exact([e["seq"] for e in events], await last_seq(client, session_id))
        assert run_id in runner.log_text()
        if topology == "replicated":
            assert run_id not in watcher.log_text()
    assert len(events) >= 30


@pytest.mark.parametrize("topology", TOPOLOGIES)
async def test_a_watcher_that_drops_mid_run_resumes_on_the_other_replica(
    topology: str, tmp_path: Path
) -> None:
    _needs_services(topology)
    async with cluster(tmp_path, embedded=topology == "embedded") as c:
        first, second = c.replicas[0], c.replicas[-1]
        async with GraphQLHttpClient(first.base_url, c.key) as client:
            started = await start_ok(client, prompt=paced_scenario(steps=15, delay_ms=80))
            session_id, run_id = started["session"]["id"], started["run"]["id"]

            ws = await GraphQLWSClient.open(first.ws_url, token=c.key)
            head = await read_events(await watch(ws, session_id), 12)
            # An abrupt drop, as a network would do it: no complete, no close handshake.
            ws.ws.transport.abort()
            await ws.wait_closed(timeout=10)

            async with GraphQLWSClient.connect(second.ws_url, token=c.key) as again:
                resumed = await watch(again, session_id, after_seq=head[-1]["seq"])
                tail = await collect_until_run_ends(resumed, run_id)
            assert_exact([e["seq"] for e in head + tail], await last_seq(client, session_id))


@pytest.mark.parametrize("topology", TOPOLOGIES)
async def test_three_watchers_opening_at_once_all_see_everything(topology: str, tmp_path: Path) -> None:
    _needs_services(topology)
    async with cluster(tmp_path, embedded=topology == "embedded") as c:
        replica = c.replicas[-1]
        async with GraphQLHttpClient(replica.base_url, c.key) as client:
            started = await start_ok(client, prompt=paced_scenario(steps=10, delay_ms=50))
            session_id, run_id = started["session"]["id"], started["run"]["id"]

            async def one_watcher() -> list[int]:
                async with GraphQLWSClient.connect(replica.ws_url, token=c.key) as ws:
                    sub = await watch(ws, session_id)
                    return [e["seq"] for e in await collect_until_run_ends(sub, run_id)]

            results = await asyncio.gather(one_watcher(), one_watcher(), one_watcher())
            final = await last_seq(client, session_id)
        for seqs in results:
            assert_exact(seqs, final)


async def test_a_redis_restart_mid_run_loses_nothing_and_leaves_no_replica_deaf(tmp_path: Path) -> None:
    _needs_services("replicated")
    # A long catch-up interval: after the restart, prompt delivery must come from the bus itself.
    async with cluster(
        tmp_path,
        private_redis=True,
        env={"CATCHUP_POLL_SECONDS": "60"},
        per_replica=[{}, {"EXECUTE_RUNS": "false"}],
    ) as c:
        assert c.redis is not None
        watcher = c.replicas[1]
        async with (
            GraphQLHttpClient(watcher.base_url, c.key) as client,
            GraphQLWSClient.connect(watcher.ws_url, token=c.key) as ws,
        ):
            started = await start_ok(client, prompt=paced_scenario(steps=25, delay_ms=100))
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            head = await read_events(sub, 10)

            c.redis.stop()
            # The outage itself: the run goes on, events go to the log, publishing fails.
            await asyncio.sleep(1.0)
            c.redis.start()
            await c.wait_ready()

            tail = await collect_until_run_ends(sub, run_id, timeout=120)
            assert_exact([e["seq"] for e in head + tail], await last_seq(client, session_id))

            # After the restart the fan-out works again on both replicas: a new run's events arrive
            # well within the 60 s catch-up interval, so they came through Redis.
            again = await start_ok(client, prompt="after the restart", sessionId=session_id)
            loop = asyncio.get_running_loop()
            began = loop.time()
            more = await collect_until_run_ends(sub, again["run"]["id"], timeout=30)
            assert loop.time() - began < 20
            assert_exact([e["seq"] for e in head + tail + more], await last_seq(client, session_id))
        assert await c.metric(watcher, "agent_bus_reconnects_total") >= 1


async def _until(read: Callable[[], Awaitable[float]], *, above: float, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await read() <= above:
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _small_buffer_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a paused reader pushes back on the server quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("topology", TOPOLOGIES)
async def test_a_watcher_that_pauses_while_5000_events_pass_gets_them_all(
    topology: str, tmp_path: Path
) -> None:
    _needs_services(topology)
    # A paused client answers no ping: on a loaded machine the 5,000-event run can outlast the server's
    # ping interval plus timeout (40 s), and the server would rightly drop the connection as dead.
    env = {"WATCHER_QUEUE_SIZE": "100", "WS_PING_INTERVAL_SECONDS": "600"}
    async with cluster(tmp_path, embedded=topology == "embedded", env=env) as c:
        replica = c.replicas[-1]
        async with GraphQLHttpClient(replica.base_url, c.key) as client:
            # The session exists and is idle before the watcher subscribes, so every event of the big
            # run passes through the live queue while the watcher is paused (none through its replay).
            first = await start_ok(client, prompt="before the flood")
            session_id = first["session"]["id"]
            await wait_for_run(client, first["run"]["id"])
            before = await last_seq(client, session_id)
            overflows_before = await c.metric(replica, "agent_bus_watcher_overflows_total")
            watchers_before = await c.metric(replica, "agent_bus_live_watchers")
            async with connect(
                replica.ws_url,
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                sock=_small_buffer_socket(replica.port),
                # Uncompressed, the paused stream (~9 MB) is well past what the kernel's socket buffers
                # hold (~4 MB), so the server must block and the watcher's queue must overflow.
                compression=None,
                max_queue=4,
                max_size=None,
                proxy=None,
                # No keepalive of our own: while paused we read nothing, so a pong would sit unread behind
                # the queued frames and the client would close its own socket with 1011 (keepalive ping
                # timeout) under load. The server's pings are spaced out above for the same reason.
                ping_interval=None,
            ) as raw:
                init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {c.key}"}}
                await raw.send(json.dumps(init))
                assert json.loads(await raw.recv())["type"] == "connection_ack"
                variables = {"sessionId": session_id, "afterSeq": before, "partial": True}
                subscribe = {"query": SESSION_EVENTS, "variables": variables}
                await raw.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
                # Live first: once the replica counts the watcher, every later event reaches its queue.
                await _until(lambda: c.metric(replica, "agent_bus_live_watchers"), above=watchers_before)
                started = await start_ok(client, prompt="[scenario:many:5000]", sessionId=session_id)
                run_id = started["run"]["id"]
                # Paused: not reading while the whole run passes.
                run = await wait_for_run(client, run_id, timeout=180)
                assert run["status"] == "COMPLETED", run
                # Still paused until the watcher's queue overflows (bounded memory; it will resynchronise
                # from the log). Wake-ups leave through the outbox, which may still be draining when the
                # run reads COMPLETED, so wait for the overflow rather than read the counter once.
                await _until(
                    lambda: c.metric(replica, "agent_bus_watcher_overflows_total"),
                    above=overflows_before,
                    timeout=60,
                )
                final = await last_seq(client, session_id)
                seqs: list[int] = []
                while len(seqs) < final - before:
                    message = json.loads(await asyncio.wait_for(raw.recv(), timeout=60))
                    assert message["type"] == "next", message
                    event = message["payload"]["data"]["sessionEvents"]
                    if not event["ephemeral"]:
                        seqs.append(event["seq"])
        assert seqs == list(range(before + 1, final + 1)), _describe(seqs)
        assert final - before > 5000


async def test_a_replica_shutting_down_closes_sockets_with_a_retryable_code(tmp_path: Path) -> None:
    _needs_services("replicated")
    async with cluster(tmp_path, per_replica=[{"EXECUTE_RUNS": "false"}, {}]) as c:
        leaving, staying = c.replicas
        async with GraphQLHttpClient(staying.base_url, c.key) as client:
            started = await start_ok(client, prompt=paced_scenario(steps=20, delay_ms=80))
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            ws = await GraphQLWSClient.open(leaving.ws_url, token=c.key)
            head = await read_events(await watch(ws, session_id), 8)
            leaving.terminate()
            code = await ws.wait_closed(timeout=30)
            # graphql-ws clients retry 1001/1012 (going away / service restart), not 4xxx protocol errors.
            assert code in (1001, 1012)
            async with GraphQLWSClient.connect(staying.ws_url, token=c.key) as again:
                tail = await collect_until_run_ends(
                    await watch(again, session_id, after_seq=head[-1]["seq"]), run_id
                )
            assert_exact([e["seq"] for e in head + tail], await last_seq(client, session_id))
            run = (await client.execute(RUN, {"id": run_id}))["run"]
        assert run["status"] == "COMPLETED"


async def test_a_replica_killed_mid_run_fails_its_run_and_the_session_resumes_elsewhere(
    tmp_path: Path,
) -> None:
    _needs_services("replicated")
    # The default leases (6 s, reaped within 1 s); replica 1 runs nothing until replica 0 is gone.
    env = {"DISPATCH_POLL_SECONDS": "0.5"}
    async with cluster(tmp_path, env=env, per_replica=[{}, {"EXECUTE_RUNS": "false"}]) as c:
        doomed, survivor = c.replicas
        async with (
            GraphQLHttpClient(survivor.base_url, c.key) as client,
            GraphQLWSClient.connect(survivor.ws_url, token=c.key) as ws,
        ):
            first = await start_ok(client, prompt="remember me")
            session_id = first["session"]["id"]
            await wait_for_run(client, first["run"]["id"])
            doomed_run = await start_ok(
                client, prompt=paced_scenario(steps=40, delay_ms=100), sessionId=session_id
            )
            sub = await watch(ws, session_id, after_seq=await last_seq(client, session_id))
            await read_events(sub, 6)
            doomed.kill()

            failed = await wait_for_run(client, doomed_run["run"]["id"], timeout=60)
            assert failed["status"] == "FAILED"
            assert "stopped responding" in failed["error"]
        # The survivor takes runs now; the next turn resumes the same conversation from the shared DATA_DIR.
        survivor.env["EXECUTE_RUNS"] = "true"
        await survivor.stop()
        await survivor.start()
        async with GraphQLHttpClient(survivor.base_url, c.key) as client:
            again = await start_ok(client, prompt="still me?", sessionId=session_id)
            done = await wait_for_run(client, again["run"]["id"], timeout=60)
            events = (await client.execute(EVENTS_ALL, {"sessionId": session_id}))["events"]
        assert done["status"] == "COMPLETED"
        assert done["result"]["result"] == "You said: still me?"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


EVENTS_ALL = "query($sessionId: ID!) { events(sessionId: $sessionId, first: 1000) { seq } }"
EVENTS_KINDS = """query($sessionId: ID!, $afterSeq: Int) {
  events(sessionId: $sessionId, afterSeq: $afterSeq, first: 1000) {
    seq payload { __typename ... on RunStatusChanged { status } } } }"""


async def whole_log(client: GraphQLHttpClient, session_id: str) -> list[dict[str, Any]]:
    logged: list[dict[str, Any]] = []
    while page := (
        await client.execute(
            EVENTS_KINDS, {"sessionId": session_id, "afterSeq": logged[-1]["seq"] if logged else 0}
        )
    )["events"]:
        logged += page
    return logged


async def test_a_replica_shut_down_mid_run_reports_the_run_failed_with_the_reason(tmp_path: Path) -> None:
    _needs_services("replicated")
    async with cluster(tmp_path, per_replica=[{}, {"EXECUTE_RUNS": "false"}]) as c:
        runner, other = c.replicas
        async with (
            GraphQLHttpClient(other.base_url, c.key) as client,
            GraphQLWSClient.connect(other.ws_url, token=c.key) as ws,
        ):
            # A burst: the CLI is far ahead of the log when the server is told to stop.
            started = await start_ok(client, prompt="[scenario:many:2000]")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            sub = await watch(ws, session_id)
            await read_events(sub, 6)
            loop = asyncio.get_running_loop()
            terminated = loop.time()
            runner.terminate()
            await runner.wait(timeout=30)
            exited_after = loop.time() - terminated
            events = await collect_until_run_ends(sub, run_id, timeout=30)
            run = (await client.execute(RUN, {"id": run_id}))["run"]
            logged = await whole_log(client, session_id)
    assert run["status"] == "FAILED"
    assert run["error"] == "the server shut down during the run"
    assert events[-1]["payload"]["error"] == run["error"]
    # The final status is the run's last event: nothing the CLI said is appended after it.
    assert logged[-1]["payload"] == {"__typename": "RunStatusChanged", "status": "FAILED"}, logged[-3:]
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    # uvicorn's graceful 10 s, then the run's CLI stopped within its bound (6 s), with room for load.
    assert exited_after < 25, exited_after
