"""Encoding a step as a Messages API answer: an SSE stream or one JSON message.

A stream is built as a schedule of ``(seconds after the first byte, event)`` and then played, so pacing
(``tokens_per_second``) and a mid-stream error (``stream_error_after_ms``) compose without special cases.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from api.scripted_model.scenario import (
    ERROR_TYPE_BY_STATUS,
    Step,
    StepError,
    TextBlock,
    ThinkingBlock,
    tool_use_id,
)

_TOKEN = re.compile(r"\S+\s*|\s+")
# Without pacing, text still arrives in a few deltas, as from the real API, so partial-message
# consumers see more than one delta per block.
_UNPACED_DELTAS = 3
_DEFAULT_STREAM_ERROR = StepError(529, ERROR_TYPE_BY_STATUS[529], "scripted mid-stream overload")
# A stalled stream stays open this long at most, so a client that never gives up cannot pin the server.
STALL_SECONDS = 300.0
# Events sent before a stream fault: message_start, ping, the first block's start and its first delta,
# so the client has begun a message when the stream breaks.
_EVENTS_BEFORE_FAULT = 4
# An event whose data is cut off mid-JSON, as from a broken proxy.
MALFORMED_EVENT = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"te\n\n'
)


@dataclass(frozen=True, slots=True)
class Reply:
    """A step resolved for one request: concrete block dicts, usage and model name."""

    step: Step
    blocks: tuple[dict[str, Any], ...]
    model: str
    input_tokens: int
    output_tokens: int
    message_id: str


def resolve_reply(step: Step, *, model: str, turn_key: str, step_index: int, request_chars: int) -> Reply:
    blocks: list[dict[str, Any]] = []
    for i, block in enumerate(step.content):
        if isinstance(block, TextBlock):
            blocks.append({"type": "text", "text": block.text})
        elif isinstance(block, ThinkingBlock):
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
        else:
            block_id = block.id or tool_use_id(turn_key, step_index, i)
            blocks.append({"type": "tool_use", "id": block_id, "name": block.name, "input": block.input})
    # ~4 characters per token is the usual rule of thumb; the counts only need to be plausible.
    input_tokens = step.usage.input_tokens
    output_tokens = step.usage.output_tokens
    return Reply(
        step=step,
        blocks=tuple(blocks),
        model=model,
        input_tokens=input_tokens if input_tokens is not None else max(1, request_chars // 4),
        output_tokens=output_tokens if output_tokens is not None else sum(map(_estimate_tokens, blocks)) or 1,
        message_id=f"msg_scripted_{uuid.uuid4().hex[:24]}",
    )


def _estimate_tokens(block: dict[str, Any]) -> int:
    if block["type"] == "tool_use":
        return math.ceil(len(orjson.dumps(block["input"])) / 4)
    return math.ceil(len(block.get("text") or block.get("thinking") or "") / 4)


def error_body(error: StepError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.type, "message": error.message}}


def message_json(reply: Reply) -> dict[str, Any]:
    """The non-streaming answer."""
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": list(reply.blocks),
        "stop_reason": reply.step.effective_stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply.input_tokens, reply.output_tokens),
    }


def paced_duration(reply: Reply) -> float:
    """How long the streamed content would take; the non-streaming answer waits as long."""
    return _content_schedule(reply)[-1][0]


async def stream_reply(reply: Reply) -> AsyncIterator[bytes]:
    """Play the SSE schedule of a reply, in real time."""
    schedule = _content_schedule(reply)
    if reply.step.stream_fault is not None:
        async for chunk in _faulty_stream(schedule[:_EVENTS_BEFORE_FAULT], reply.step.stream_fault):
            yield chunk
        return
    error_at = (
        reply.step.stream_error_after_ms / 1000 if reply.step.stream_error_after_ms is not None else None
    )
    if error_at is not None:
        # The error replaces the end of the message: after a message_stop the CLI would keep the
        # message as complete and ignore the error.
        schedule = [(offset, event) for offset, event in schedule[:-2] if offset < error_at]
    start = time.monotonic()
    for offset, event in schedule:
        await _sleep_until(start + offset)
        yield event
    if error_at is not None:
        await _sleep_until(start + error_at)
        yield _sse("error", error_body(stream_error(reply.step)))


async def _faulty_stream(head: list[tuple[float, bytes]], fault: str) -> AsyncIterator[bytes]:
    for _, event in head:
        yield event
    if fault == "malformed":
        yield MALFORMED_EVENT
        return
    # Stalled: the connection stays open and silent; the server cancels this when the client leaves.
    await asyncio.sleep(STALL_SECONDS)


def stream_error(step: Step) -> StepError:
    """The error a step with ``stream_error_after_ms`` ends with (also its non-streaming answer)."""
    return step.error or _DEFAULT_STREAM_ERROR


async def _sleep_until(deadline: float) -> None:
    # Pacing is the behaviour being simulated here, not synchronisation.
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _content_schedule(reply: Reply) -> list[tuple[float, bytes]]:
    step = reply.step
    interval = 1 / step.tokens_per_second if step.tokens_per_second else 0.0
    clock = 0.0
    events: list[tuple[float, bytes]] = []

    def emit(name: str, data: dict[str, Any]) -> None:
        events.append((clock, _sse(name, data)))

    emit(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": reply.message_id,
                "type": "message",
                "role": "assistant",
                "model": reply.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(reply.input_tokens, 1),
            },
        },
    )
    emit("ping", {"type": "ping"})
    for index, block in enumerate(reply.blocks):
        emit(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": _empty(block)},
        )
        for delta in _deltas(block, paced=interval > 0):
            clock += interval if delta["type"] in ("text_delta", "thinking_delta") else 0.0
            emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        emit("content_block_stop", {"type": "content_block_stop", "index": index})
    emit(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": step.effective_stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    emit("message_stop", {"type": "message_stop"})
    return events


def _empty(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}


def _deltas(block: dict[str, Any], *, paced: bool) -> list[dict[str, Any]]:
    if block["type"] == "text":
        return [{"type": "text_delta", "text": c} for c in _chunks(block["text"], paced=paced)]
    if block["type"] == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"], paced=paced)]
        return [*deltas, {"type": "signature_delta", "signature": block["signature"]}]
    raw = orjson.dumps(block["input"]).decode()
    half = len(raw) // 2
    return [{"type": "input_json_delta", "partial_json": part} for part in (raw[:half], raw[half:]) if part]


def _chunks(text: str, *, paced: bool) -> list[str]:
    tokens = _TOKEN.findall(text) or [text]
    if paced:
        return tokens
    size = math.ceil(len(tokens) / _UNPACED_DELTAS)
    return ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
