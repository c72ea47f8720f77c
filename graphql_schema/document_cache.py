"""Parsing and validating a document once per replica, not once per request.

Validation was a quarter of the server's CPU under load. Strawberry's `ParserCache` and `ValidationCache`
do not fit here: the validation cache is keyed by the parsed document (a deep hash and compare of the
tree on every request) and by the validation rules, and `QueryDepthLimiter` and `MaxAliasesLimiter`
make new rule classes for every operation, so it would never hit (schema.py now makes theirs once per
schema, but the deep hash remains). This cache is keyed by the document's
text instead, and keeps the parse together with the verdict of every validation rule of the schema,
the limiters included (their settings do not change while the schema lives).

Clients send the same few documents over and over; a bounded LRU keeps the recent ones, and documents
longer than `MAX_DOCUMENT_CHARS` are not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension

MAX_DOCUMENT_CHARS = 20_000


@dataclass(frozen=True)
class _Entry:
    document: DocumentNode
    errors: tuple[GraphQLError, ...] | None  # None until validated


class DocumentStore:
    """document text -> its parse and validation errors; least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, text: str) -> _Entry | None:
        entry = self._items.get(text)
        if entry is not None:
            self._items.move_to_end(text)
        return entry

    def put(self, text: str, entry: _Entry) -> None:
        if len(text) > MAX_DOCUMENT_CHARS:
            return
        self._items[text] = entry
        self._items.move_to_end(text)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class DocumentCache(SchemaExtension):
    """Supplies the parse and the validation verdict of a document seen before; keeps new ones."""

    def __init__(self, *, store: DocumentStore) -> None:
        self.store = store
        self._hit: _Entry | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            self._hit = self.store.get(context.query)
            if self._hit is not None:
                context.graphql_document = self._hit.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit is not None and self._hit.errors is not None:
            # Strawberry skips its validation when errors are already set ([] means valid).
            context.pre_execution_errors = list(self._hit.errors)
            yield
            return
        yield
        if context.query is not None and context.graphql_document is not None:
            errors = tuple(context.pre_execution_errors or ())
            self.store.put(context.query, _Entry(context.graphql_document, errors))
