"""Schema extensions of our own: input checks at the edge, and codes on the errors a client caused."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension

from api.errors import ServiceError, ValidationFailed
from graphql_schema.input_checks import json_problem, text_problem


def service_error(error: GraphQLError) -> ServiceError | None:
    """The ServiceError behind ``error``, however deep graphql-core wrapped it."""
    cause: BaseException | None = error.original_error
    while isinstance(cause, GraphQLError):
        cause = cause.original_error
    return cause if isinstance(cause, ServiceError) else None


class _StringLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.problem: str | None = None

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        self.problem = text_problem(node.value)
        return self.BREAK if self.problem else None


class InputChecks(SchemaExtension):
    """Every String, ID and JSON a client sends (variables and literals alike) is text PostgreSQL can
    store and JSON of bounded depth (graphql_schema/input_checks.py); otherwise the operation is refused
    with VALIDATION_ERROR before any resolver runs."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        problem = json_problem(context.variables or {})
        if problem is not None:
            _refuse(f"variables: {problem}")
        if context.graphql_document is not None:
            problem = _literal_problems.of(context.graphql_document)
            if problem is not None:
                _refuse(f"a string in the document {problem}")
        yield


class _LiteralProblems:
    """The verdict on a document's string literals, kept per parsed document.

    Walking the whole tree was a few per cent of a read's CPU; with the document cache
    (graphql_schema/document_cache.py) the same DocumentNode comes back for every request with the same
    text, so the walk runs once per document. Keyed by identity (a Node's hash walks the tree), with a
    weak reference that tells a reused id apart and pins no document."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[int, tuple[weakref.ref[DocumentNode], str | None]] = OrderedDict()

    def of(self, document: DocumentNode) -> str | None:
        key = id(document)
        hit = self._items.get(key)
        if hit is not None and hit[0]() is document:
            self._items.move_to_end(key)
            return hit[1]
        literals = _StringLiterals()
        visit(document, literals)
        self._items[key] = (weakref.ref(document), literals.problem)
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return literals.problem


_literal_problems = _LiteralProblems(1024)


def _refuse(message: str) -> None:
    # Coded here: an error raised before execution reaches the client without passing ErrorCodes.
    failure = ValidationFailed(message)
    raise GraphQLError(message, original_error=failure, extensions={"code": failure.code})


class ErrorCodes(SchemaExtension):
    """Top-level errors a client caused carry ``extensions.code`` (VALIDATION_ERROR, NOT_FOUND…)."""

    def on_operation(self) -> Iterator[None]:
        yield
        self._add_codes(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._add_codes(result)
        yield

    @staticmethod
    def _add_codes(result: Any) -> None:
        for error in getattr(result, "errors", None) or ():
            found = service_error(error)
            if found is not None:
                error.extensions = {**(error.extensions or {}), "code": found.code}
