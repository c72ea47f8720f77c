"""Schema extensions of our own: input checks at the edge, and codes on the errors a client caused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, StringValueNode, Visitor, visit
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
            literals = _StringLiterals()
            visit(context.graphql_document, literals)
            if literals.problem is not None:
                _refuse(f"a string in the document {literals.problem}")
        yield


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
