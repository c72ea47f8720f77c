"""Scalar and enum fields completed in place (graphql_schema/fast_paths.py, FastLeafExecutor) answer
byte for byte what graphql-core's own field execution answers: the read benchmark's queries (for the
caller's tenant, for another tenant's ids, for ids that do not exist) and every way a leaf can fail."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api.auth import authenticate
from benchmarks.reads import EVENTS, SESSION, SESSIONS, session_rows
from graphql_schema.fast_executor import FastLeafExecutor
from graphql_schema.fast_paths import apply_fast_paths
from persistence.models import AgentSession, Event, Run, utcnow
from tests.conftest import Stack
from tests.graphql.test_read_path import _seed


@contextmanager
def generic_leaves() -> Iterator[None]:
    """Inside, the server's FastLeafExecutor executes every field the long way (graphql-core's own)."""
    fast = FastLeafExecutor.execute_field, FastLeafExecutor.execute_fields
    FastLeafExecutor.execute_field = StrawberryGraphQLCoreExecutionContext.execute_field  # type: ignore[method-assign]
    FastLeafExecutor.execute_fields = StrawberryGraphQLCoreExecutionContext.execute_fields  # type: ignore[method-assign]
    try:
        yield
    finally:
        FastLeafExecutor.execute_field, FastLeafExecutor.execute_fields = fast  # type: ignore[method-assign]


async def _answers(stack: Stack, key: str, requests: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    client = stack.client(key)
    try:
        return [(await client.execute_raw(query, variables)).content for query, variables in requests]
    finally:
        await client.aclose()


async def _seed_benchmark_session(stack: Stack) -> str:
    """A session with the runs and the log the read benchmark seeds, through the API's own database."""
    db = stack.api.services.db
    principal = await authenticate(db, stack.key)
    assert principal is not None
    session, runs, events = session_rows(principal.tenant_id, principal.api_key_id, "bench", utcnow(), 30)
    async with db.session() as s:
        await s.execute(sa.insert(AgentSession), [session])
        await s.execute(sa.insert(Run), runs)
        await s.execute(sa.insert(Event), events)
        await s.commit()
    return str(session["id"])


async def test_the_benchmark_queries_answer_the_same_bytes(stack: Stack) -> None:
    ours = await _seed_benchmark_session(stack)
    odd = await _seed(stack)  # non-ASCII text, an integer past 64 bits, unknown kinds of blocks and events
    missing = "00000000-0000-0000-0000-000000000000"
    requests = [
        (SESSION, {"id": ours}),
        (SESSION, {"id": odd}),
        (SESSION, {"id": missing}),
        (SESSIONS, {}),
        (EVENTS, {"sessionId": ours, "afterSeq": 0}),
        (EVENTS, {"sessionId": ours, "afterSeq": 7}),
        (EVENTS, {"sessionId": odd, "afterSeq": 0}),
        (EVENTS, {"sessionId": missing, "afterSeq": 0}),
    ]
    with generic_leaves():
        generic = {key: await _answers(stack, key, requests) for key in (stack.key, stack.other_key)}
    fast = {key: await _answers(stack, key, requests) for key in (stack.key, stack.other_key)}
    assert fast == generic
    # What the answers are: ours found, the other tenant's typed NOT_FOUND / null, as before.
    assert b'"errors"' not in fast[stack.key][0]
    assert b'"errors"' not in fast[stack.key][4]
    assert b"NOT_FOUND" in fast[stack.other_key][4]
    assert fast[stack.other_key][0] == b'{"data":{"session":null}}'


class Color(enum.Enum):
    RED = "RED"


@strawberry.type
class Leaves:
    text: str
    number: int
    maybe: int | None
    color: Color
    ratio: float


class Odd:
    """What a resolver might hand a plain field by mistake: wrong types, nulls, a failing attribute."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    @property
    def ratio(self) -> float:
        raise RuntimeError("broken attribute")


@strawberry.type
class Query:
    @strawberry.field
    def good(self) -> Leaves:
        return Leaves(text="t", number=1, maybe=None, color=Color.RED, ratio=0.5)

    @strawberry.field
    def bad(self) -> list[Leaves | None]:
        return [
            Odd(text=None, number=1, maybe=2, color=Color.RED),  # type: ignore[list-item]
            Odd(text="t", number="x", maybe=2.5, color="BLUE"),  # type: ignore[list-item]
            Odd(text=3, number=2**40, maybe=True, color=Color.RED),  # type: ignore[list-item]
        ]


def _schema(executor: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    schema = strawberry.Schema(query=Query, execution_context_class=executor)
    apply_fast_paths(schema)
    return schema


@pytest.mark.parametrize(
    "document",
    [
        "{ good { text number maybe color ratio } }",
        "{ __typename good { __typename t: __typename } }",
        "{ bad { text } }",
        "{ bad { number maybe } }",
        "{ bad { color } }",
        "{ bad { ratio } }",
        "{ bad { text number maybe color ratio alias: number } }",
    ],
)
async def test_a_failing_leaf_fails_as_it_did(document: str) -> None:
    def outcome(result: Any) -> tuple[Any, list[Any]]:
        return result.data, [error.formatted for error in result.errors or ()]

    fast = await _schema(FastLeafExecutor).execute(document)
    generic = await _schema(StrawberryGraphQLCoreExecutionContext).execute(document)
    assert outcome(fast) == outcome(generic)
    if "bad" in document:
        assert generic.errors


async def test_plain_leaves_skip_graphql_cores_field_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    long_way: list[str] = []
    generic = StrawberryGraphQLCoreExecutionContext.execute_field

    def counted(self: Any, parent_type: Any, source: Any, details: Any, path: Any, context: Any) -> Any:
        long_way.append(details[0].node.name.value)
        return generic(self, parent_type, source, details, path, context)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_field", counted)
    result = await _schema(FastLeafExecutor).execute("{ good { __typename text number maybe color ratio } }")
    assert result.errors is None
    good = {"__typename": "Leaves", "text": "t", "number": 1, "maybe": None, "color": "RED", "ratio": 0.5}
    assert result.data == {"good": good}
    assert long_way == ["good"]


@strawberry.input
class Pick:
    name: str
    limit: int | None = None


@strawberry.type
class ArgumentsQuery:
    @strawberry.field
    def plain(self, first: int | None = 20, after: str | None = None, id: strawberry.ID | None = None) -> str:
        return repr((first, after, id))

    @strawberry.field
    def required(self, count: int, ratio: float, flag: bool) -> str:
        return repr((count, ratio, flag))

    @strawberry.field
    def other(
        self,
        color: Color | None = None,
        pick: Pick | None = None,
        names: list[str] | None = None,
        node: strawberry.relay.GlobalID | None = None,
        some: strawberry.Maybe[int | None] = None,
    ) -> str:
        return repr((color, pick, names, node, some))


@pytest.mark.parametrize(
    "document",
    [
        "{ plain }",
        "{ plain(first: 5) }",
        '{ plain(first: null, after: "x", id: 7) }',
        "{ required(count: 2, ratio: 1.5, flag: true) }",
        "{ other }",
        '{ other(color: RED, pick: {name: "n"}, names: ["a"], node: "VHlwZTox", some: null) }',
        '{ other(node: "not a global id") }',
    ],
)
async def test_plain_scalar_arguments_reach_resolvers_as_strawberry_converts_them(
    document: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strawberry.schema import schema_converter

    from graphql_schema import fast_paths

    def outcome(result: Any) -> tuple[Any, list[Any]]:
        return result.data, [error.formatted for error in result.errors or ()]

    schema = strawberry.Schema(query=ArgumentsQuery, execution_context_class=FastLeafExecutor)
    apply_fast_paths(schema)
    fast = outcome(await schema.execute(document))
    registry = schema.schema_converter.scalar_registry
    plans = {
        field.name: fast_paths._plan(field.arguments, registry, schema.config)
        for field in ArgumentsQuery.__strawberry_definition__.fields  # type: ignore[attr-defined]
    }
    # Only `other` (an enum, an input, a list, a GlobalID, a Maybe) is left to Strawberry.
    assert plans == {
        "plain": (("first", "first"), ("after", "after"), ("id", "id")),
        "required": (("count", "count"), ("ratio", "ratio"), ("flag", "flag")),
        "other": None,
    }
    monkeypatch.setattr(schema_converter, "convert_arguments", fast_paths._strawberry_convert_arguments)
    assert outcome(await schema.execute(document)) == fast
