"""Subscription events executed and encoded once per document, not per subscriber
(graphql_schema/live/shared_events.py), and log catch-ups shared per session (api/events/shared_reads.py).

Watchers read raw frames, so what is compared is what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame
from websockets.streams import StreamReader
from websockets.typing import Subprotocol

from api.ws_protocol import FRAMES, FrameCache
from graphql_schema.live.shared_events import (
    RESULTS,
    encoded_next_frame,
    shared_result_wire,
)
from tests.conftest import Stack
from tests.documents import SESSION, SESSION_EVENTS, start_ok, wait_for_run
from tests.support.graphql_ws import GraphQLWSClient, GraphQLWSError, Subscription

pytestmark = pytest.mark.timeout(300)

SEQS = """
subscription Seqs($sessionId: ID!, $afterSeq: Int) {
  sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq) { seq }
}"""
KINDS = """
subscription Kinds($sessionId: ID!, $afterSeq: Int) {
  sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq) { seq runId payload { __typename } }
}"""


def compact(message: Any) -> str:
    """What Strawberry's own send_json would have written for this message."""
    return json.dumps(message, separators=(",", ":"))


async def _socket(stack: Stack, key: str) -> ClientConnection:
    ws = await connect(stack.api.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connection_ack"
    return ws


async def _subscribe(ws: ClientConnection, op: str, query: str, variables: dict[str, Any]) -> None:
    await ws.send(
        json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )


async def _read_frames(ws: ClientConnection, ops: list[str], last: int) -> dict[str, list[str]]:
    """Raw `next` frames per operation until each has delivered seq `last`."""
    frames: dict[str, list[str]] = {op: [] for op in ops}
    done: set[str] = set()
    while len(done) < len(ops):
        frame = str(await asyncio.wait_for(ws.recv(), 120))
        message = json.loads(frame)
        assert message["type"] == "next", message
        frames[message["id"]].append(frame)
        if message["payload"]["data"]["sessionEvents"]["seq"] >= last:
            done.add(message["id"])
    return frames


async def _last_seq(stack: Stack, session_id: str) -> int:
    async with stack.client() as client:
        return int((await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"])


async def _session(stack: Stack) -> tuple[str, int]:
    async with stack.client() as client:
        first = await start_ok(client, prompt="[scenario:echo] warm up")
        await wait_for_run(client, first["run"]["id"])
    session_id = first["session"]["id"]
    return session_id, await _last_seq(stack, session_id)


async def _run(stack: Stack, session_id: str, prompt: str) -> int:
    async with stack.client() as client:
        run = await start_ok(client, prompt=prompt, sessionId=session_id)
        await wait_for_run(client, run["run"]["id"], timeout=120)
    return await _last_seq(stack, session_id)


async def test_100_watchers_get_identical_complete_gapless_streams_executed_once(stack: Stack) -> None:
    session_id, after = await _session(stack)
    sockets = [await _socket(stack, stack.key) for _ in range(10)]
    try:
        ops = [f"w{i}" for i in range(10)]
        for ws in sockets:
            for op in ops:
                await _subscribe(ws, op, SEQS, {"sessionId": session_id, "afterSeq": after})
        executions, framed, kept = RESULTS.executions, FRAMES.built, RESULTS.wire_hits
        last = await _run(stack, session_id, "[scenario:many:40]")
        streams = [
            per_op
            for per_socket in await asyncio.gather(*(_read_frames(ws, ops, last) for ws in sockets))
            for per_op in per_socket.values()
        ]
    finally:
        for ws in sockets:
            await ws.close()
    assert len(streams) == 100
    expected = list(range(after + 1, last + 1))
    bodies = []
    for frames in streams:
        messages = [json.loads(frame) for frame in frames]
        assert [m["payload"]["data"]["sessionEvents"]["seq"] for m in messages] == expected
        # Byte for byte what Strawberry itself would have sent for the same message.
        assert [compact(m) for m in messages] == frames
        bodies.append([json.dumps(m["payload"]) for m in messages])
    assert all(body == bodies[0] for body in bodies)
    events = last - after
    # Each event executed about once for all 100 subscribers (a few races may execute it twice).
    assert RESULTS.executions - executions <= 3 * events, (RESULTS.executions - executions, events)
    # Compressed and framed once per operation id (10 of them), not once per socket too.
    assert FRAMES.built - framed <= 10 * events, (FRAMES.built - framed, events)
    # And most sends took those bytes as they were kept (the socket handler's short cut), not a frame
    # assembled per socket (100 sends per event, at most 10 of them building).
    assert RESULTS.wire_hits - kept >= 50 * events, (RESULTS.wire_hits - kept, events)
    # Only possible because the server compresses each message alone, which it told the clients.
    assert all(
        "server_no_context_takeover" in ws.response.headers["Sec-WebSocket-Extensions"]  # type: ignore[union-attr]
        for ws in sockets
    )


async def test_two_documents_get_their_own_shapes(stack: Stack) -> None:
    session_id, after = await _session(stack)
    ws = await _socket(stack, stack.key)
    try:
        variables = {"sessionId": session_id, "afterSeq": after}
        await _subscribe(ws, "seqs", SEQS, variables)
        await _subscribe(ws, "kinds", KINDS, variables)
        await _subscribe(ws, "seqs-again", SEQS, variables)
        last = await _run(stack, session_id, "[scenario:many:5]")
        frames = await _read_frames(ws, ["seqs", "kinds", "seqs-again"], last)
    finally:
        await ws.close()
    seqs = [json.loads(f)["payload"]["data"]["sessionEvents"] for f in frames["seqs"]]
    kinds = [json.loads(f)["payload"]["data"]["sessionEvents"] for f in frames["kinds"]]
    again = [json.loads(f)["payload"]["data"]["sessionEvents"] for f in frames["seqs-again"]]
    assert all(set(event) == {"seq"} for event in seqs)
    assert all(
        set(event) == {"seq", "runId", "payload"} and "__typename" in event["payload"] for event in kinds
    )
    assert [e["seq"] for e in kinds] == [e["seq"] for e in seqs] == list(range(after + 1, last + 1))
    assert again == seqs


async def test_a_subscriber_of_another_tenant_gets_nothing(stack: Stack) -> None:
    session_id, after = await _session(stack)
    async with (
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as mine,
        GraphQLWSClient.connect(stack.api.ws_url, token=stack.other_key) as theirs,
    ):
        variables = {"sessionId": session_id, "afterSeq": 0}
        own = await mine.subscribe(SEQS, variables)
        assert (await own.next(timeout=30))["data"]["sessionEvents"]["seq"] == 1  # the cache holds it now
        foreign = await theirs.subscribe(SEQS, variables)
        assert "not found" in await _refusal(foreign)
        full = await theirs.subscribe(SESSION_EVENTS, {"sessionId": session_id, "afterSeq": after})
        assert "not found" in await _refusal(full)


async def _refusal(sub: Subscription) -> str:
    """The errors of a subscription that must end without any data."""
    try:
        answer = await sub.next(timeout=30)
    except GraphQLWSError as failure:
        return json.dumps(failure.payload)
    assert answer.get("data") is None, answer
    await sub.expect_complete(timeout=30)
    return json.dumps(answer["errors"])


async def test_a_shared_frame_is_what_strawberry_would_encode() -> None:
    data = {"sessionEvents": {"seq": 7, "text": 'é \u2028 "q" \\', "n": 1.5, "none": None}}
    RESULTS.put(("test", id(data)), _result(data), data)
    try:
        message = {"id": "op-1", "type": "next", "payload": {"data": data}}
        assert encoded_next_frame(message, compact) == compact(message)
        with_errors = {"id": "op-1", "type": "next", "payload": {"data": data, "errors": []}}
        assert encoded_next_frame(with_errors, compact) is None
        assert (
            encoded_next_frame({"id": "x", "type": "next", "payload": {"data": dict(data)}}, compact) is None
        )
    finally:
        RESULTS.clear()


@pytest.mark.parametrize("window_bits", [None, 12, 9])
def test_a_shared_frame_decodes_as_its_text_in_any_order(window_bits: int | None) -> None:
    texts = [json.dumps({"id": "a", "type": "next", "payload": {"seq": i, "x": "é" * i}}) for i in range(40)]
    frames = [FRAMES.frame(text, window_bits) for text in texts]
    assert all(FRAMES.frame(text, window_bits) is frame for text, frame in zip(texts, frames, strict=True))
    # A client decompresses with a context kept across messages unless it was told the server keeps none;
    # each message was compressed alone, so both read it, whichever order the messages come in.
    for keeps_context in (False, True):
        decoder = (
            [] if window_bits is None else [PerMessageDeflate(not keeps_context, False, window_bits, 12)]
        )
        for index in [*range(40), 3, 3, 0]:
            reader = StreamReader()
            reader.feed_data(frames[index])
            parser = Frame.parse(reader.read_exact, mask=False, extensions=decoder)
            try:
                next(parser)
            except StopIteration as done:
                frame = done.value
            assert frame.data.decode() == texts[index]


@pytest.mark.parametrize("special_stack", [{"ws_shared_compression": False}], indirect=True)
async def test_with_a_compression_context_per_socket_every_watcher_still_gets_every_event(
    special_stack: Stack,
) -> None:
    stack = special_stack
    session_id, after = await _session(stack)
    sockets = [await _socket(stack, stack.key) for _ in range(3)]
    try:
        for ws in sockets:
            await _subscribe(ws, "w", SEQS, {"sessionId": session_id, "afterSeq": after})
        last = await _run(stack, session_id, "[scenario:many:30]")
        streams = await asyncio.gather(*(_read_frames(ws, ["w"], last) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    for ws in sockets:
        extensions = ws.response.headers["Sec-WebSocket-Extensions"]  # type: ignore[union-attr]
        assert "permessage-deflate" in extensions
        assert "server_no_context_takeover" not in extensions
    expected = list(range(after + 1, last + 1))
    for stream in streams:
        messages = [json.loads(frame) for frame in stream["w"]]
        assert [message["payload"]["data"]["sessionEvents"]["seq"] for message in messages] == expected


def test_the_frame_cache_is_bounded_in_bytes_as_well() -> None:
    cache = FrameCache(size=100, max_bytes=2000)
    texts = [str(i) * 300 for i in range(10)]
    for text in texts:
        cache.frame(text, None)
    # 300 characters and a 304-byte frame each: three fit.
    assert cache.frame(texts[-1], None) is cache.frame(texts[-1], None)
    built = cache.built
    cache.frame(texts[-3], None)
    assert cache.built == built
    cache.frame(texts[-4], None)
    assert cache.built == built + 1


def _result(data: dict[str, Any]) -> Any:
    from graphql import ExecutionResult

    return ExecutionResult(data=data)


async def test_idle_watchers_share_one_catch_up_per_session(stack: Stack) -> None:
    session_id, after = await _session(stack)
    reads = stack.api.services.event_log.shared_reads
    async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
        subs = [await ws.subscribe(SEQS, {"sessionId": session_id, "afterSeq": after}) for _ in range(20)]
        before = reads.queries
        # Two catch-up intervals (CATCHUP_POLL_SECONDS is 2 in tests) of silence.
        await asyncio.sleep(2 * stack.settings.catchup_poll_seconds + 1)
        queries = reads.queries - before
        for sub in subs:
            await sub.complete()
    # One or two reads per interval for the session, not one per subscriber (that would be 40).
    assert 1 <= queries <= 6, queries


def test_a_shared_next_frame_is_framed_once_per_operation_id_and_compression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = {"sessionEvents": {"seq": 8, "text": "é" * 50}}
    RESULTS.put(("test-wire", id(data)), _result(data), data)
    cache = FrameCache()
    try:
        message = {"id": "1", "type": "next", "payload": {"data": data}}
        text = encoded_next_frame(message, compact)
        assert text is not None
        first = shared_result_wire(data, "1", compact, 12, cache.build)
        assert first == FrameCache().frame(text, 12)
        # Kept: built once.
        assert shared_result_wire(data, "1", compact, 12, cache.build) is first
        assert cache.built == 1
        # Another compression, or another operation id, is another frame.
        plain = shared_result_wire(data, "1", compact, None, cache.build)
        assert plain == FrameCache().frame(text, None)
        other = shared_result_wire(data, "op-2", compact, 12, cache.build)
        assert other == FrameCache().frame(text.replace('"id":"1"', '"id":"op-2"'), 12)
        assert cache.built == 3
        assert shared_result_wire(dict(data), "1", compact, 12, cache.build) is None
        assert RESULTS.wire_bytes >= len(first) + len(plain) + len(other)
        # Over the budget frames are still right, only not kept.
        monkeypatch.setattr("graphql_schema.live.shared_events.MAX_WIRE_BYTES", RESULTS.wire_bytes)
        again = shared_result_wire(data, "op-3", compact, 12, cache.build)
        assert again == shared_result_wire(data, "op-3", compact, 12, cache.build)
        assert cache.built == 5
    finally:
        RESULTS.clear()
    assert RESULTS.wire_bytes == 0
