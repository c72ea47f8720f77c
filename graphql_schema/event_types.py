"""The event stream's types: a union of agent messages and lifecycle events, with content blocks."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from api.events.records import EventKind, EventRecord
from graphql_schema.permissions.types import PermissionRequest


@strawberry.enum(description="Where a run is in its life.")
class RunStatus(Enum):
    QUEUED = strawberry.enum_value("QUEUED", description="Waiting for a replica with a free slot.")
    RUNNING = strawberry.enum_value("RUNNING", description="The agent is working on it.")
    COMPLETED = strawberry.enum_value("COMPLETED", description="The turn ended with a successful result.")
    FAILED = strawberry.enum_value(
        "FAILED",
        description="It ended in an error (the agent, the model API, a timeout, a lost replica); see error.",
    )
    INTERRUPTED = strawberry.enum_value(
        "INTERRUPTED", description="interruptRun (or onBusy: INTERRUPT) stopped it."
    )


@strawberry.type(description="Plain text written by the model or the user.")
class TextBlock:
    text: str = strawberry.field(description="The text.")


@strawberry.type(description="The model's visible reasoning.")
class ThinkingBlock:
    thinking: str = strawberry.field(description="The reasoning, as the model wrote it.")
    signature: str | None = strawberry.field(
        default=None, description="The model's signature over the thinking, when it gives one."
    )


@strawberry.type(description="The model asks for a tool to run with this input.")
class ToolUseBlock:
    id: strawberry.ID = strawberry.field(description="The tool call's id; its ToolResultBlock names it.")
    name: str = strawberry.field(description="The tool, e.g. Bash, Read, Edit, or an MCP tool.")
    input: JSON = strawberry.field(description="The tool's arguments.")


@strawberry.type(description="What a tool returned, sent back to the model.")
class ToolResultBlock:
    tool_use_id: strawberry.ID = strawberry.field(description="The ToolUseBlock this answers.")
    content: JSON | None = strawberry.field(
        default=None, description="What the tool returned: text, or a list of content blocks."
    )
    is_error: bool | None = strawberry.field(default=None, description="True when the tool failed.")


@strawberry.type(description="A content block of a kind this API has no type for yet, kept verbatim.")
class OtherBlock:
    data: JSON = strawberry.field(description="The block as the agent sent it.")


ContentBlock = Annotated[
    TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock | OtherBlock,
    strawberry.union("ContentBlock", description="One block of a message's content."),
]


def content_blocks(raw: list[dict[str, Any]] | None) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    for block in raw or []:
        kind = block.get("type")
        if kind == "text":
            blocks.append(TextBlock(text=block["text"]))
        elif kind == "thinking":
            blocks.append(ThinkingBlock(thinking=block["thinking"], signature=block.get("signature")))
        elif kind == "tool_use":
            blocks.append(
                ToolUseBlock(id=strawberry.ID(block["id"]), name=block["name"], input=block["input"])
            )
        elif kind == "tool_result":
            blocks.append(
                ToolResultBlock(
                    tool_use_id=strawberry.ID(block["tool_use_id"]),
                    content=block.get("content"),
                    is_error=block.get("is_error"),
                )
            )
        else:
            blocks.append(OtherBlock(data=block.get("data", block)))
    return blocks


@strawberry.type(description="A message from the model: text, thinking and tool calls.")
class AssistantMessage:
    uuid: strawberry.ID | None = strawberry.field(description="The message's id in the agent's transcript.")
    model: str = strawberry.field(description="The model that wrote it.")
    content: list[ContentBlock] = strawberry.field(description="Text, thinking and tool calls, in order.")
    parent_tool_use_id: strawberry.ID | None = strawberry.field(
        description="Set when a subagent wrote this message: the Agent tool call it belongs to."
    )
    stop_reason: str | None = strawberry.field(description="Why the model stopped: end_turn, tool_use…")
    usage: JSON | None = strawberry.field(description="Token counts as the model API reports them.")
    error: str | None = strawberry.field(description="Set when the model API failed for this message.")


@strawberry.type(description="A message on the user side: the prompt, or tool results sent to the model.")
class UserMessage:
    uuid: strawberry.ID | None = strawberry.field(description="The message's id in the agent's transcript.")
    text: str | None = strawberry.field(description="The text blocks joined, when there are any.")
    content: list[ContentBlock] = strawberry.field(description="Text and tool results, in order.")
    parent_tool_use_id: strawberry.ID | None = strawberry.field(
        description="Set when it belongs to a subagent: the Agent tool call it answers within."
    )
    tool_use_result: JSON | None = strawberry.field(description="The tool's rich result (diffs, file info).")


@strawberry.type(description="A system message of the agent CLI (init, status, tasks, compaction…).")
class SystemMessage:
    subtype: str = strawberry.field(description="init, status, compact_boundary…")
    data: JSON = strawberry.field(description="The message as the agent CLI sent it.")


@strawberry.type(description="The end of a turn: outcome, cost, usage and the final answer.")
class ResultMessage:
    subtype: str = strawberry.field(description="success, error_during_execution, error_max_turns…")
    is_error: bool = strawberry.field(description="True when the turn ended in an error.")
    duration_ms: int = strawberry.field(description="Wall time of the turn in milliseconds.")
    duration_api_ms: int = strawberry.field(
        description="Time spent waiting for the model API, in milliseconds."
    )
    num_turns: int = strawberry.field(description="How many model turns the run took.")
    total_cost_usd: float | None = strawberry.field(description="What the turn cost, as the agent reports.")
    usage: JSON | None = strawberry.field(description="Token counts for the whole turn.")
    result: str | None = strawberry.field(description="The final answer's text.")
    structured_output: JSON | None = strawberry.field(description="Follows the run's outputSchema.")
    stop_reason: str | None = strawberry.field(description="Why the model stopped, last time it did.")
    terminal_reason: str | None = strawberry.field(description="Why the turn ended, when the agent says.")
    permission_denials: JSON | None = strawberry.field(description="Tool uses that were refused.")

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ResultMessage:
        return cls(
            subtype=payload.get("subtype", ""),
            is_error=bool(payload.get("is_error")),
            duration_ms=int(payload.get("duration_ms") or 0),
            duration_api_ms=int(payload.get("duration_api_ms") or 0),
            num_turns=int(payload.get("num_turns") or 0),
            total_cost_usd=payload.get("total_cost_usd"),
            usage=payload.get("usage"),
            result=payload.get("result"),
            structured_output=payload.get("structured_output"),
            stop_reason=payload.get("stop_reason"),
            terminal_reason=payload.get("terminal_reason"),
            permission_denials=payload.get("permission_denials"),
        )


@strawberry.type(description="A raw streaming event (token delta). Ephemeral: never in the log.")
class PartialMessage:
    event: JSON = strawberry.field(description="The model API's stream event, e.g. a content_block_delta.")


@strawberry.type(description="A run moved to another status.")
class RunStatusChanged:
    run_id: strawberry.ID = strawberry.field(description="The run that changed.")
    status: RunStatus = strawberry.field(description="Its new status.")
    error: str | None = strawberry.field(description="Why the run failed, when it did.")


@strawberry.type(
    description="The server called the tenant's webhook for a hook event of the agent (one event per call)."
)
class HookFired:
    hook_event: str = strawberry.field(description="PreToolUse, PostToolUse, Stop…")
    tool_name: str | None = strawberry.field(description="The tool, for tool events.")
    data: JSON | None = strawberry.field(
        description="The call: webhookId, toolUseId, ok, httpStatus, durationMs, and the answer (decision, "
        "reason, additionalContext, continue, updatedInput) or the error and whether it failed closed."
    )


@strawberry.type(description="The agent asked permission to use a tool (or asked the user a question).")
class PermissionRequested:
    request: PermissionRequest = strawberry.field(description="The request as it was asked: PENDING.")


@strawberry.type(description="A permission request was decided, expired or cancelled.")
class PermissionDecided:
    request: PermissionRequest = strawberry.field(description="The request as it was decided.")


@strawberry.type(description="The session's files were rewound to a checkpoint (rewindFiles).")
class FilesRewound:
    checkpoint_id: strawberry.ID = strawberry.field(
        description="The checkpoint: the files are as they were before that run's prompt."
    )
    files_changed: list[str] = strawberry.field(
        description="The files restored or removed, relative to the session's workspace."
    )
    conversation: bool = strawberry.field(
        description="True when the conversation was rewound too: the next turn continues from before "
        "that prompt."
    )


@strawberry.type(description="A payload kind this server version recorded but cannot type; kept verbatim.")
class UnknownEvent:
    kind: str = strawberry.field(description="The event's kind in the log.")
    data: JSON = strawberry.field(description="The payload, verbatim.")


SessionEventPayload = Annotated[
    AssistantMessage
    | UserMessage
    | SystemMessage
    | ResultMessage
    | PartialMessage
    | RunStatusChanged
    | HookFired
    | PermissionRequested
    | PermissionDecided
    | FilesRewound
    | UnknownEvent,
    strawberry.union(
        "SessionEventPayload", description="What happened: an agent message or a lifecycle event."
    ),
]


def payload_of(kind: str, payload: dict[str, Any]) -> SessionEventPayload:
    if kind == EventKind.ASSISTANT:
        return AssistantMessage(
            uuid=_id(payload.get("uuid")),
            model=payload.get("model") or "",
            content=content_blocks(payload.get("content")),
            parent_tool_use_id=_id(payload.get("parent_tool_use_id")),
            stop_reason=payload.get("stop_reason"),
            usage=payload.get("usage"),
            error=payload.get("error"),
        )
    if kind == EventKind.USER:
        return UserMessage(
            uuid=_id(payload.get("uuid")),
            text=payload.get("text"),
            content=content_blocks(payload.get("content")),
            parent_tool_use_id=_id(payload.get("parent_tool_use_id")),
            tool_use_result=payload.get("tool_use_result"),
        )
    if kind == EventKind.SYSTEM:
        return SystemMessage(subtype=payload.get("subtype", ""), data=cast(JSON, payload.get("data") or {}))
    if kind == EventKind.RESULT:
        return ResultMessage.from_payload(payload)
    if kind == EventKind.PARTIAL:
        return PartialMessage(event=cast(JSON, payload.get("event") or {}))
    if kind == EventKind.RUN_STATUS:
        return RunStatusChanged(
            run_id=strawberry.ID(payload["run_id"]),
            status=RunStatus(payload["status"]),
            error=payload.get("error"),
        )
    if kind == EventKind.HOOK_FIRED:
        return HookFired(
            hook_event=payload.get("hook_event", ""),
            tool_name=payload.get("tool_name"),
            data=cast(JSON, payload.get("data")),
        )
    if kind == EventKind.PERMISSION_REQUESTED:
        return PermissionRequested(request=PermissionRequest.from_snapshot(payload["request"]))
    if kind == EventKind.PERMISSION_DECIDED:
        return PermissionDecided(request=PermissionRequest.from_snapshot(payload["request"]))
    if kind == EventKind.FILES_REWOUND:
        return FilesRewound(
            checkpoint_id=strawberry.ID(payload["checkpoint_id"]),
            files_changed=[str(path) for path in payload.get("files_changed") or []],
            conversation=bool(payload.get("conversation")),
        )
    return UnknownEvent(kind=kind, data=cast(JSON, payload))


def _id(value: str | None) -> strawberry.ID | None:
    return strawberry.ID(value) if value else None


# Executed once per replica for all subscribers of a document (graphql_schema/live/shared_events.py): no
# field under SessionEvent may depend on who asks.
@strawberry.type(description="One event of a session's log. Durable events have seq 1, 2, 3… with no gaps.")
class SessionEvent:
    seq: int = strawberry.field(
        description="The event's place in the session's log; for ephemeral events, the last durable seq."
    )
    ephemeral: bool = strawberry.field(description="True for token deltas: live only, never replayed.")
    session_id: strawberry.ID = strawberry.field(description="The session it belongs to.")
    run_id: strawberry.ID | None = strawberry.field(description="The run that produced it, if any.")
    created_at: datetime = strawberry.field(description="When it was written to the log.")
    payload: SessionEventPayload = strawberry.field(description="What happened.")

    @classmethod
    def from_columns(
        cls,
        session_id: str,
        seq: int,
        run_id: str | None,
        kind: str,
        payload: dict[str, Any],
        created_at: datetime,
        ephemeral: bool = False,
    ) -> SessionEvent:
        """A SessionEvent for an event given as its log columns, in the table's order (a row of the
        `events` query is one): no EventRecord is built in between for each event of a page (a frozen
        dataclass: a third of building a page of events)."""
        return cls(
            seq=seq,
            ephemeral=ephemeral,
            session_id=strawberry.ID(session_id),
            run_id=_id(run_id),
            created_at=created_at,
            payload=payload_of(kind, payload),
        )

    @classmethod
    def from_record(cls, record: EventRecord) -> SessionEvent:
        """A new SessionEvent for a record (see shared_event for live fan-out)."""
        return cls.from_columns(
            record.session_id,
            record.seq,
            record.run_id,
            record.kind,
            record.payload,
            record.created_at,
            record.ephemeral,
        )


class _SharedEvents:
    """The SessionEvent of each recently delivered record, built once for all watchers of a replica.

    Live records come from the bus decoder shared by every watcher, so the same record object reaches
    many subscriptions; keyed by identity, holding the record so its id cannot be reused meanwhile.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[int, tuple[EventRecord, SessionEvent]] = OrderedDict()

    def get(self, record: EventRecord) -> SessionEvent:
        key = id(record)
        hit = self._items.get(key)
        if hit is not None and hit[0] is record:
            self._items.move_to_end(key)
            return hit[1]
        event = SessionEvent.from_record(record)
        self._items[key] = (record, event)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return event


shared_event = _SharedEvents(4096).get
