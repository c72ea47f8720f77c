"""Extension hooks found through the per-class cache (graphql_schema/extension_hooks.py) run as
Strawberry's own context managers run them: the same hooks, in the same order, with the same outcome,
for every kind of hook (a generator, an async generator, a plain function, a coroutine function) and for
hooks that raise before and after their yield."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from graphql_schema import extension_hooks
from graphql_schema.live.stream_hooks import StreamingExtensionsRunner

calls: list[str] = []


class Generators(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        calls.append("generator operation in")
        yield
        calls.append("generator operation out")

    async def on_execute(self) -> AsyncIterator[None]:
        calls.append("async generator execute in")
        yield
        calls.append("async generator execute out")


class Callables(SchemaExtension):
    def on_parse(self) -> None:  # type: ignore[override]
        calls.append("function parse")

    async def on_validate(self) -> None:  # type: ignore[override]
        calls.append("coroutine validate")


class Refuses(SchemaExtension):
    """Raises where the test's query asks it to (as PersistedQueries refuses before its yield)."""

    def on_operation(self) -> Iterator[None]:
        if "refuseBefore" in (self.execution_context.query or ""):
            raise GraphQLError("refused before")
        yield
        if "refuseAfter" in (self.execution_context.query or ""):
            raise GraphQLError("refused after")


class Swallows(SchemaExtension):
    """Sees what the hooks inside it raised, as contextlib shows it to a generator."""

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except GraphQLError as error:
            calls.append(f"saw {error.message}")
            raise


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"

    @strawberry.field
    def refuse_before(self) -> str:
        return "x"

    @strawberry.field
    def refuse_after(self) -> str:
        return "x"


class Cached(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return StreamingExtensionsRunner(execution_context=execution_context, extensions=extensions)


async def _run(schema_class: type[strawberry.Schema], query: str) -> tuple[Any, list[str]]:
    schema = schema_class(query=Query, extensions=[Swallows, Generators, Callables, Refuses])
    calls.clear()
    try:
        result = await schema.execute(query)
        outcome: Any = (result.data, [error.formatted for error in result.errors or ()])
    except Exception as exc:  # compared with Strawberry's own outcome
        outcome = repr(exc)
    return outcome, list(calls)


@pytest.mark.parametrize("query", ["{ hello }", "{ refuseBefore }", "{ refuseAfter }", "{ nope }", "{"])
async def test_hooks_run_as_strawberrys_run_them(query: str) -> None:
    theirs = await _run(strawberry.Schema, query)
    ours = await _run(Cached, query)
    assert ours == theirs
    if query == "{ hello }":
        assert theirs[1] == [
            "generator operation in",
            "function parse",
            "coroutine validate",
            "async generator execute in",
            "async generator execute out",
            "generator operation out",
        ]


def test_each_class_and_hook_is_looked_at_once() -> None:
    extension_hooks._made.clear()
    # The hooks' context managers do not look at the execution context until they run.
    runner = StreamingExtensionsRunner(None, [Generators(), Generators()])  # type: ignore[arg-type]
    for _ in range(3):
        assert len(runner.operation().hooks) == 2
        assert len(runner.parsing().hooks) == 0
    assert extension_hooks._made[(Generators, "on_operation")] is not None
    assert extension_hooks._made[(Generators, "on_parse")] is None
    assert len(extension_hooks._made) == 2
