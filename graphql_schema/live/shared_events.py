"""Each session event executed and serialised once per replica and subscription document, not once per
subscriber.

graphql-core executes a subscription's selection set for every event and every subscriber, and the
socket handler serialises each result again; with 100 watchers of one session that was half the CPU of
a burst (issue 10). Here the per-event executor looks the result up first, keyed by

- the document (its source text and operation name), and the variables that can change the result: all
  of them except the one that only carries ``afterSeq`` (a resume cursor, it never shapes an event);
- the event: a durable event by (session, seq, createdAt), since the log is append-only and a seq names
  one event forever; an ephemeral one by the SessionEvent object itself, which ``shared_event`` gives every
  watcher of a replica.

Authorisation needs nothing in the key beyond the session: a subscription only ever executes events its
own resolver yielded, after that resolver checked the caller may see the session. Results with errors
are never shared (each subscriber's own execution reports them). The socket handler then sends a shared
result's payload as JSON text encoded once (:func:`encoded_next_frame`), byte for byte what it would have
encoded itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

import orjson
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import OperationType, VariableNode, Visitor, visit
from graphql.language import ArgumentNode, FieldNode, OperationDefinitionNode, print_ast

from graphql_schema.event_types import SessionEvent
from graphql_schema.fast_executor import FastLeafExecutor

# Root subscription fields whose argument is a resume cursor: it decides where a stream starts, never
# what an event looks like.
CURSOR_ARGUMENTS: frozenset[tuple[str, str]] = frozenset({("sessionEvents", "afterSeq")})
DEFAULT_SIZE = 4096  # as many as graphql_schema/event_types.py keeps shared SessionEvents
# Wire bytes kept with the results (shared_next_wire), in all; beyond it frames are built and not kept.
MAX_WIRE_BYTES = 32 * 1024 * 1024


@dataclass(eq=False)
class _Entry:
    result: GraphQLExecutionResult
    anchor: object  # keeps the event (an ephemeral key is its identity) alive while cached
    encoded: str | None = None
    # A `next` frame's wire bytes by (operation id, compression): see shared_next_wire.
    wire: dict[tuple[str, int | None], bytes] | None = None


class SharedEventResults:
    """A bounded LRU of execution results, and their payloads' JSON text, by (document, variables, event)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        # The result's data dict -> its entry, so the socket handler recognises a shared payload.
        self._by_data: dict[int, _Entry] = {}
        self.executions = 0  # results computed (misses), for tests and diagnostics
        self.hits = 0
        self.wire_bytes = 0  # kept in the entries' `wire`, bounded by MAX_WIRE_BYTES
        self.wire_hits = 0  # frames found kept (tests and diagnostics)

    def get(self, key: tuple[Any, ...]) -> GraphQLExecutionResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.result

    def put(self, key: tuple[Any, ...], result: GraphQLExecutionResult, anchor: object) -> None:
        self.executions += 1
        if result.errors or not isinstance(result.data, dict) or key in self._entries:
            return
        entry = _Entry(result, anchor)
        self._entries[key] = entry
        self._by_data[id(result.data)] = entry
        while len(self._entries) > self._size:
            _, old = self._entries.popitem(last=False)
            self._forget(old)

    def entry_of(self, payload: Mapping[str, object]) -> _Entry | None:
        """The entry of a `next` payload that is exactly ``{"data": <a shared result's data>}``."""
        if len(payload) != 1:
            return None
        return self.entry_of_data(payload.get("data"))

    def entry_of_data(self, data: object) -> _Entry | None:
        """The entry whose result's data is this very object."""
        entry = self._by_data.get(id(data))
        if entry is None or entry.result.data is not data:
            return None
        return entry

    def encoded_payload(
        self, payload: Mapping[str, object], encode: Callable[[Any], str | bytes]
    ) -> str | None:
        """The JSON text of a `next` payload that is exactly ``{"data": <a shared result's data>}``."""
        entry = self.entry_of(payload)
        return None if entry is None else _encoded(entry, encode)

    def keep_wire(self, entry: _Entry, key: tuple[str, int | None], data: bytes) -> None:
        if self.wire_bytes + len(data) > MAX_WIRE_BYTES:
            return
        if self._by_data.get(id(entry.result.data)) is not entry:
            return  # evicted meanwhile: its bytes would never be counted off
        if entry.wire is None:
            entry.wire = {}
        entry.wire[key] = data
        self.wire_bytes += len(data)

    def _forget(self, entry: _Entry) -> None:
        self._by_data.pop(id(entry.result.data), None)
        if entry.wire:
            self.wire_bytes -= sum(len(data) for data in entry.wire.values())
            entry.wire = None

    def clear(self) -> None:
        for entry in self._entries.values():
            self._forget(entry)
        self._entries.clear()
        self._by_data.clear()


RESULTS = SharedEventResults()


def _encoded(entry: _Entry, encode: Callable[[Any], str | bytes]) -> str:
    if entry.encoded is None:
        encoded = encode({"data": entry.result.data})
        entry.encoded = encoded.decode() if isinstance(encoded, bytes) else encoded
    return entry.encoded


def _shared_entry(message: Mapping[str, Any]) -> _Entry | None:
    if message.get("type") != "next" or len(message) != 3:
        return None
    payload = message.get("payload")
    if not isinstance(payload, Mapping):
        return None
    return RESULTS.entry_of(payload)


def _frame_text(entry: _Entry, operation_id: Any, encode: Callable[[Any], str | bytes]) -> str:
    encoded_id = encode(operation_id)
    if isinstance(encoded_id, bytes):
        encoded_id = encoded_id.decode()
    return '{"id":' + encoded_id + ',"type":"next","payload":' + _encoded(entry, encode) + "}"


def encoded_next_frame(message: Mapping[str, Any], encode: Callable[[Any], str | bytes]) -> str | None:
    """The text of a graphql-transport-ws `next` message whose payload is shared, or None.

    Strawberry encodes ``{"id", "type", "payload"}`` in that order with compact separators; only the
    payload is costly, so it is encoded once and the frame is assembled around it.
    """
    entry = _shared_entry(message)
    return None if entry is None else _frame_text(entry, message["id"], encode)


def shared_result_wire(
    data: object,
    operation_id: str,
    encode: Callable[[Any], str | bytes],
    window_bits: int | None,
    build: Callable[[str, int | None], bytes],
) -> bytes | None:
    """The wire bytes of the `next` message ``{"id": operation_id, "type": "next", "payload": {"data":
    data}}`` when ``data`` is a shared result's (:func:`encoded_next_frame`'s text, framed by ``build``
    for ``window_bits``), or None."""
    entry = RESULTS.entry_of_data(data)
    if entry is None:
        return None
    # Kept with the result by operation id and compression: the subscribers of one document mostly name
    # their operations alike (clients number them from 1), so in a burst each socket's send is a dict
    # look-up, where assembling the text and hashing it to find its frame cost every socket about as much
    # as building the frame cost once.
    if type(operation_id) is not str:
        return build(_frame_text(entry, operation_id, encode), window_bits)
    key = (operation_id, window_bits)
    wire = entry.wire
    if wire is not None:
        found = wire.get(key)
        if found is not None:
            RESULTS.wire_hits += 1
            return found
    frame = build(_frame_text(entry, operation_id, encode), window_bits)
    RESULTS.keep_wire(entry, key, frame)
    return frame


class _DocumentKey:
    """Computed once per subscription (shared by its per-event copies of the executor)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: tuple[Any, ...] | None = None


class SharedEventExecutor(FastLeafExecutor):
    """Strawberry's executor (with fast_paths' leaves); per subscription event, a result from :data:`RESULTS`
    when there is one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._document_key = _DocumentKey()

    def build_per_event_executor(self, payload: Any) -> Any:
        # A result already shared needs no executor of its own: graphql-core's copy of the executor
        # per event and subscriber was the next cost after execution itself.
        if isinstance(payload, SessionEvent) and self.operation.operation is OperationType.SUBSCRIPTION:
            cached = RESULTS.get((self._key_of_document(), _event_key(payload)))
            if cached is not None:
                return _Executed(cached)
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        event = self.root_value
        if not isinstance(event, SessionEvent) or self.operation.operation is not OperationType.SUBSCRIPTION:
            return super().execute_operation(serially)
        key = (self._key_of_document(), _event_key(event))
        cached = RESULTS.get(key)
        if cached is not None:
            return cached
        result = super().execute_operation(serially)
        if isinstance(result, GraphQLExecutionResult):
            RESULTS.put(key, result, event)
            return result
        if isawaitable(result):
            return _store_when_done(result, key, event)
        return result

    def _key_of_document(self) -> tuple[Any, ...]:
        known = self._document_key.value
        if known is None:
            known = self._document_key.value = _document_key(
                self.operation, self.fragment_definitions, self.variable_values.coerced
            )
        return known


class _Executed:
    """Stands in for a per-event executor whose result is known: graphql-core's subscription loop only
    asks it to execute the operation."""

    __slots__ = ("result",)

    def __init__(self, result: GraphQLExecutionResult) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> GraphQLExecutionResult:
        return self.result


async def _store_when_done(pending: Awaitable[Any], key: tuple[Any, ...], event: SessionEvent) -> Any:
    result = await pending
    if isinstance(result, GraphQLExecutionResult):
        RESULTS.put(key, result, event)
    return result


def _event_key(event: SessionEvent) -> tuple[Any, ...]:
    if event.ephemeral:
        return ("ephemeral", id(event))
    return ("durable", str(event.session_id), event.seq, event.created_at)


def _document_key(
    operation: OperationDefinitionNode, fragments: Mapping[str, Any], variables: Mapping[str, Any]
) -> tuple[Any, ...]:
    source = operation.loc.source.body if operation.loc is not None else print_ast(operation)
    name = operation.name.value if operation.name is not None else None
    cursors = _cursor_variables(operation, fragments)
    relevant = {key: value for key, value in variables.items() if key not in cursors}
    return (source, name, orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS, default=repr))


class _VariableUses(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.counts[node.name.value] = self.counts.get(node.name.value, 0) + 1


def _cursor_variables(operation: OperationDefinitionNode, fragments: Mapping[str, Any]) -> set[str]:
    """Variables used only as a root field's cursor argument (their definitions aside)."""
    candidates: set[str] = set()
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            continue
        for argument in selection.arguments or ():
            if (
                isinstance(argument, ArgumentNode)
                and (selection.name.value, argument.name.value) in CURSOR_ARGUMENTS
                and isinstance(argument.value, VariableNode)
            ):
                candidates.add(argument.value.name.value)
    if not candidates:
        return set()
    uses = _VariableUses()
    visit(operation.selection_set, uses)
    for fragment in fragments.values():
        node = getattr(fragment, "definition", fragment)
        visit(node, uses)
    return {name for name in candidates if uses.counts.get(name) == 1}
