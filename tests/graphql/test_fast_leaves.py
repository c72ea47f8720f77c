"""Fields completed in place (graphql_schema/fast_executor.py, FastLeafExecutor) answer
byte for byte what graphql-core's own field execution answers: the read benchmark's queries (for the
caller's tenant, for another tenant's ids, for ids that do not exist) and every way a leaf can fail."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult

from api.auth import authenticate
from benchmarks.reads import EVENTS, SESSION, SESSIONS, session_rows
from graphql_schema.fast_executor import FastLeafExecutor
from graphql_schema.fast_paths import apply_fast_paths
from persistence.models import AgentSession, Event, Run, utcnow
from tests.conftest import Stack
from tests.graphql.test_read_path import _seed

_FAST_METHODS = ("execute_field", "execute_fields", "complete_value")


@contextmanager
def generic_leaves() -> Iterator[None]:
    """Inside, the server's FastLeafExecutor executes and completes every field the long way (graphql-core's
    own)."""
    fast = {name: FastLeafExecutor.__dict__[name] for name in _FAST_METHODS}
    for name in _FAST_METHODS:
        setattr(FastLeafExecutor, name, getattr(StrawberryGraphQLCoreExecutionContext, name))
    try:
        yield
    finally:
        for name, method in fast.items():
            setattr(FastLeafExecutor, name, method)


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


@pytest.fixture
def long_way(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the fields graphql-core's own execute_field takes, in order."""
    taken: list[str] = []
    generic = StrawberryGraphQLCoreExecutionContext.execute_field

    def counted(self: Any, parent_type: Any, source: Any, details: Any, path: Any, context: Any) -> Any:
        taken.append(details[0].node.name.value)
        return generic(self, parent_type, source, details, path, context)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_field", counted)
    return taken


async def test_plain_leaves_skip_graphql_cores_field_execution(long_way: list[str]) -> None:
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


# Objects, unions and lists of them completed in place (graphql_schema/fast_executor.py): what a resolver
# returns and what a plain field holds, in every shape a value can fail in.


@strawberry.type
class Block:
    text: str
    size: int | None


@strawberry.type
class Other:
    name: str


class BlockSubclass(Block):
    """Not the member's own class: the union's resolver the long way."""


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Person(Named):
    """Implements an interface: Strawberry gives it an is_type_of, so it goes the long way."""

    age: int


Item = Annotated[Block | Other, strawberry.union("Item")]


@strawberry.type
class Holder:
    block: Block
    maybe_block: Block | None
    item: Item
    maybe_item: Item | None
    blocks: list[Block]
    maybe_blocks: list[Block | None] | None
    items: list[Item]
    maybe_items: list[Item | None]
    person: Person | None
    people: list[Person]


def _holder(**changes: Any) -> Holder:
    values: dict[str, Any] = {
        "block": Block(text="b", size=1),
        "maybe_block": None,
        "item": Other(name="o"),
        "maybe_item": Block(text="i", size=None),
        "blocks": [Block(text="x", size=2), Block(text="y", size=None)],
        "maybe_blocks": [Block(text="z", size=3), None],
        "items": [Block(text="p", size=4), Other(name="q")],
        "maybe_items": [None, Other(name="r")],
        "person": Person(name="n", age=3),
        "people": [Person(name="m", age=4)],
    }
    values.update(changes)
    holder = Holder.__new__(Holder)
    holder.__dict__.update(values)
    return holder


class _Raises:
    """A holder whose every attribute fails."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"no {name}")


async def _async_blocks() -> list[Block]:
    return [Block(text="a", size=None), Block(text="b", size=5)]


@strawberry.type
class ObjectsQuery:
    @strawberry.field
    def holders(self) -> list[Holder | None]:
        return [
            _holder(),
            _holder(block=None),  # a null for a non-null object
            _holder(item=BlockSubclass(text="s", size=1), maybe_item=strawberry.cast(Other, Other(name="c"))),
            _holder(blocks=[Block(text="x", size=1), None]),  # a null for a non-null item
            _holder(
                maybe_blocks=(Block(text="t", size=1),), items=iter([Other(name="g")])
            ),  # tuple, iterator
            _holder(blocks=[Block(text=None, size=1)]),  # type: ignore[arg-type]  # a failing leaf in an item
            _holder(maybe_items=[Block(text="k", size="x"), 7]),  # a refused leaf; no member for an int
            _holder(block=RuntimeError("an exception as a value"), maybe_block=ValueError("another")),
            _raises_holder(),
            _holder(person=Other(name="not a person"), people=[Person(name="p", age=None)]),  # type: ignore[arg-type]
        ]

    @strawberry.field
    def ordinary(self) -> list[Holder]:
        return [_holder(), _holder(maybe_block=Block(text="m", size=None))]

    @strawberry.field
    async def blocks(self) -> list[Block]:
        return await _async_blocks()

    @strawberry.field
    def items(self) -> list[Item | None]:
        return [Other(name="a"), None, Block(text="b", size=None), BlockSubclass(text="c", size=2)]

    @strawberry.field
    def strict_items(self) -> list[Item]:
        return [Other(name="a"), None]  # type: ignore[list-item]

    @strawberry.field
    def one(self) -> Item:
        return Block(text="one", size=1)

    @strawberry.field
    async def awaited_items(self) -> list[Item]:
        return [Other(name="x"), Block(text="y", size=None)]

    @strawberry.field
    def nested(self) -> list[list[Block | None]]:
        return [[Block(text="n", size=1), None], []]


def _raises_holder() -> Holder:
    return _Raises()  # type: ignore[return-value]


@strawberry.type
class Slow:
    """A plain object field whose object has an async field: completion with awaitables inside."""

    @strawberry.field
    async def text(self) -> str:
        return "slow"

    @strawberry.field
    async def fails(self) -> str:
        raise RuntimeError("async failure")


@strawberry.type
class SlowHolder:
    slow: Slow
    slows: list[Slow]
    maybe_slows: list[Slow | None] | None


@strawberry.type
class SlowQuery:
    @strawberry.field
    def holder(self) -> SlowHolder:
        holder = SlowHolder.__new__(SlowHolder)
        holder.__dict__.update(slow=Slow(), slows=[Slow(), Slow()], maybe_slows=[Slow(), None])
        return holder


HOLDER_FIELDS = """
  __typename
  block { text size }
  maybeBlock { text }
  item { __typename ... on Block { text size } ... on Other { name } }
  maybeItem { __typename ... on Block { text } ... on Other { name } }
  blocks { text size __typename }
  maybeBlocks { text }
  items { ... on Block { text } ... on Other { name } }
  maybeItems { __typename ... on Block { size } }
  person { name age }
  people { name age }
"""


@pytest.mark.parametrize(
    ("query", "document"),
    [
        (ObjectsQuery, "{ holders {" + HOLDER_FIELDS + "} }"),
        (ObjectsQuery, "{ holders { block { text } } }"),
        (ObjectsQuery, "{ holders { blocks { text } } }"),
        (ObjectsQuery, "{ holders { items { __typename } maybeItems { __typename } } }"),
        (ObjectsQuery, "{ holders { a: block { size } b: block { text } block { size } } }"),
        (ObjectsQuery, "{ holders { maybeBlocks @include(if: true) { text } } }"),
        (ObjectsQuery, "{ blocks { text size } items { __typename ... on Block { text } } }"),
        (ObjectsQuery, "{ strictItems { __typename } one { ... on Block { text } } }"),
        (ObjectsQuery, "{ awaitedItems { __typename ... on Other { name } } nested { text size } }"),
        (SlowQuery, "{ holder { slow { text } slows { text } maybeSlows { text } } }"),
        (SlowQuery, "{ holder { slow { text fails } } }"),
        (SlowQuery, "{ holder { slows { fails } } }"),
        (SlowQuery, "{ holder { maybeSlows { text fails } } }"),
    ],
)
async def test_objects_and_lists_complete_as_graphql_core_completes_them(query: type, document: str) -> None:
    def outcome(result: Any) -> tuple[Any, list[Any]]:
        return result.data, sorted(str(error.formatted) for error in result.errors or ())

    def schema(executor: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
        built = strawberry.Schema(query=query, execution_context_class=executor)
        apply_fast_paths(built)
        return built

    fast = await schema(FastLeafExecutor).execute(document)
    with generic_leaves():
        generic = await schema(FastLeafExecutor).execute(document)
    plain = await schema(StrawberryGraphQLCoreExecutionContext).execute(document)
    assert outcome(fast) == outcome(generic) == outcome(plain)


async def test_plain_objects_skip_graphql_cores_field_execution(long_way: list[str]) -> None:
    result = await _objects_schema().execute("{ ordinary {" + HOLDER_FIELDS + "} }")
    assert result.errors is None
    assert result.data is not None
    assert len(result.data["ordinary"]) == 2
    # Only the root field's resolver and the fields of a type with is_type_of (Person) went the long way.
    assert long_way == ["ordinary"] + ["person", "people"] * 2


def _objects_schema() -> strawberry.Schema:
    schema = strawberry.Schema(query=ObjectsQuery, execution_context_class=FastLeafExecutor)
    apply_fast_paths(schema)
    return schema


async def test_argument_plans_are_bounded_across_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that builds schema after schema keeps at most MAX_PLANS of their argument lists alive."""
    from graphql_schema import fast_paths

    monkeypatch.setattr(fast_paths, "MAX_PLANS", 3)
    monkeypatch.setattr(fast_paths, "_plans", {})
    for _ in range(5):
        schema = strawberry.Schema(query=ArgumentsQuery, execution_context_class=FastLeafExecutor)
        apply_fast_paths(schema)
        result = await schema.execute("{ plain(first: 5) required(count: 1, ratio: 0.5, flag: false) }")
        assert result.data == {"plain": "(5, None, None)", "required": "(1, 0.5, False)"}
        assert len(fast_paths._plans) <= 3


@strawberry.type
class Tick:
    n: int
    block: Block


@strawberry.type
class TickSubscription:
    @strawberry.subscription
    async def ticks(self, count: int) -> AsyncIterator[Tick]:
        for n in range(count):
            yield Tick(n=n, block=Block(text=str(n), size=n))


async def test_a_subscriptions_plans_do_not_grow_with_its_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event's root fields are collected anew (and the fields below them: graphql-core memoizes those
    by the identity of the root's), in a per-event copy of the executor: each copy has memos and plans of
    its own, so a subscription that lives for hours does not keep a few per event."""
    executors: list[FastLeafExecutor] = []
    init = FastLeafExecutor.__init__

    def recorded(self: FastLeafExecutor, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        executors.append(self)

    monkeypatch.setattr(FastLeafExecutor, "__init__", recorded)
    schema = strawberry.Schema(
        query=Query, subscription=TickSubscription, execution_context_class=FastLeafExecutor
    )
    apply_fast_paths(schema)
    stream = await schema.subscribe("subscription { ticks(count: 50) { n block { text size } } }")
    assert not isinstance(stream, ExecutionResult)
    seen = [result.data async for result in stream]
    assert seen == [{"ticks": {"n": n, "block": {"text": str(n), "size": n}}} for n in range(50)]
    assert len(executors) == 1
    assert len(executors[0]._plans) == 0
    assert len(executors[0]._relevant_sub_fields) == 0


# Async resolvers called directly (fast_paths.call_resolvers_directly): the same answers and errors as
# Strawberry's resolver chain and graphql-core's field execution, and only the fields it may call.


class Denied(strawberry.BasePermission):
    message = "denied"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Page:
    tag: str

    @strawberry.field
    async def items(
        self, info: strawberry.Info, first: int | None = 2, after: str | None = None
    ) -> list[Block]:
        return [Block(text=f"{self.tag}:{info.path.key}:{after}", size=n) for n in range(first or 0)]

    @strawberry.field
    async def count(self, first: int = 1) -> int:
        return first * 10

    @strawberry.field
    async def fails(self, first: int | None = None) -> str:
        raise RuntimeError(f"failed with {first}")

    @strawberry.field
    async def missing(self) -> str:
        return None  # type: ignore[return-value]

    @strawberry.field
    async def by_root(self, root: Any, first: int = 1) -> str:
        return f"{root.tag}:{first}"

    @strawberry.field(permission_classes=[Denied])
    async def guarded(self, first: int = 1) -> str:
        return "never"

    @strawberry.field
    async def picked(self, pick: Pick | None = None) -> str:
        return repr(pick)


@strawberry.type
class CallsQuery:
    @strawberry.field
    async def pages(self, info: strawberry.Info, count: int = 2) -> list[Page]:
        return [Page(tag=f"{info.field_name}{n}") for n in range(count)]

    @strawberry.field
    async def wrong(self) -> int:
        return "not a number"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ pages { tag items { text size } count } }", None),
        ('{ pages(count: 3) { items(first: 1, after: "c") { text } count(first: 4) } }', None),
        ("query($n: Int, $f: Int) { pages(count: $n) { items(first: $f) { text } } }", {"n": 2, "f": 3}),
        ("query($f: Int) { pages { items(first: $f) { text } } }", {}),
        ("query($f: Int!) { pages { count(first: $f) } }", {"f": 5}),
        ("{ pages { fails(first: 2) tag } }", None),
        ("{ pages { missing } }", None),
        ("{ pages { byRoot(first: 3) guarded } }", None),
        ('{ pages { picked(pick: {name: "p"}) } wrong }', None),
        ("{ pages { a: items(first: 1) { text } b: items(first: 2) { size } } }", None),
    ],
)
async def test_direct_resolvers_answer_as_strawberrys_resolvers(
    document: str, variables: dict[str, Any] | None
) -> None:
    def outcome(result: Any) -> tuple[Any, list[Any]]:
        return result.data, sorted(str(error.formatted) for error in result.errors or ())

    def schema(executor: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
        built = strawberry.Schema(query=CallsQuery, execution_context_class=executor)
        apply_fast_paths(built)
        return built

    fast = await schema(FastLeafExecutor).execute(document, variable_values=variables)
    with generic_leaves():
        generic = await schema(FastLeafExecutor).execute(document, variable_values=variables)
    plain = await schema(StrawberryGraphQLCoreExecutionContext).execute(document, variable_values=variables)
    assert outcome(fast) == outcome(generic) == outcome(plain)


async def test_only_plain_async_resolvers_are_called_directly(long_way: list[str]) -> None:
    document = "{ pages { items(first: 1) { text } count fails missing byRoot guarded picked } }"
    schema = strawberry.Schema(query=CallsQuery, execution_context_class=FastLeafExecutor)
    apply_fast_paths(schema)
    result = await schema.execute(document)
    assert result.data is None  # `missing` is a null for a String!: the page, then the list, then data
    # A `root` parameter, a permission class (an extension) and an input argument keep Strawberry's resolver.
    assert long_way == ["byRoot", "guarded", "picked"] * 2
