"""Arguments converted by converters made once per type (graphql_schema/input_converters.py, used by
fast_paths._convert_arguments) reach resolvers exactly as Strawberry's own `convert_arguments` converts
them: for every field with arguments in the server's schema and in a schema of awkward inputs (an input
that contains itself, lists of inputs, defaults, a Maybe, a GlobalID), with every field given, only the
required ones, and the nullable ones given as null."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, datetime
from enum import Enum
from typing import Any

import pytest
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from graphql.utilities import coerce_input_value
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField
from strawberry.types.unset import UNSET

from graphql_schema import fast_paths
from graphql_schema.input_converters import Unsupported, converter
from graphql_schema.inputs import StartRunInput
from graphql_schema.schema import build_schema

VARIANTS = ("full", "required", "nulls")
_SCALARS: dict[str, Any] = {
    "String": "text",
    "ID": "VHlwZTox",  # a GlobalID too
    "Int": 3,
    "Float": 1.5,
    "Boolean": True,
    "JSON": {"a": [1, None, {"b": "c"}]},
    "DateTime": datetime(2026, 1, 2, 3, 4, 5).isoformat() + "+00:00",
    "Date": date(2026, 1, 2).isoformat(),
}


def _sample(type_: GraphQLInputType, variant: str, depth: int = 0) -> Any:
    """A variable value of `type_` as a client would send it."""
    if isinstance(type_, GraphQLNonNull):
        return _sample(type_.of_type, variant, depth)
    if isinstance(type_, GraphQLList):
        return [_sample(type_.of_type, variant, depth + 1) for _ in range(2)]
    if isinstance(type_, GraphQLEnumType):
        return list(type_.values)[-1]
    if isinstance(type_, GraphQLInputObjectType):
        value = {}
        for name, field in type_.fields.items():
            required = isinstance(field.type, GraphQLNonNull)
            if required or (variant == "full" and depth < 3):
                value[name] = _sample(field.type, variant, depth + 1)
            elif variant == "nulls":
                value[name] = None
        return value
    assert isinstance(type_, GraphQLScalarType)
    if type_.name == "GlobalID":
        return "VHlwZTox"
    return _SCALARS[type_.name]


def _same(ours: Any, theirs: Any, given: set[int]) -> bool:
    """The same value, down to the types, and a list copied where Strawberry copies it."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, list):
        return (
            (id(ours) in given) == (id(theirs) in given)
            and len(ours) == len(theirs)
            and all(_same(a, b, given) for a, b in zip(ours, theirs, strict=True))
        )
    if isinstance(ours, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k], given) for k in ours)
    if dataclasses.is_dataclass(ours):
        return all(
            _same(getattr(ours, f.name), getattr(theirs, f.name), given) for f in dataclasses.fields(ours)
        )
    return bool(ours is theirs or ours == theirs)


def _lists(value: Any) -> Iterator[int]:
    if isinstance(value, list):
        yield id(value)
        for item in value:
            yield from _lists(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _lists(item)


def _fields_with_arguments(schema: strawberry.Schema) -> Iterator[tuple[str, StrawberryField]]:
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if isinstance(definition, StrawberryObjectDefinition) and not definition.is_input:
            for field in definition.fields:
                if field.arguments:
                    yield f"{definition.name}.{field.name}", field


def _compare(schema: strawberry.Schema) -> list[str]:
    """Every field with arguments of `schema`, each variant: what differs (nothing, hopefully)."""
    registry = schema.schema_converter.scalar_registry
    differences: list[str] = []
    graphql_schema = schema._schema
    for where, field in _fields_with_arguments(schema):
        type_name, _, _ = where.partition(".")
        graphql_type = graphql_schema.type_map[type_name]
        graphql_field = graphql_type.fields[schema.config.name_converter.get_graphql_name(field)]  # type: ignore[attr-defined]
        for variant in VARIANTS:
            values = {
                name: coerce_input_value(_sample(argument.type, variant), argument.type)
                for name, argument in graphql_field.args.items()
                if variant != "required" or isinstance(argument.type, GraphQLNonNull)
            }
            given = set(_lists(values))
            ours = fast_paths._convert_arguments(values, field.arguments, registry, schema.config)
            theirs = fast_paths._strawberry_convert_arguments(
                values, field.arguments, registry, schema.config
            )
            if not _same(ours, theirs, given):
                differences.append(f"{where} ({variant}): {ours!r} != {theirs!r}")
    return differences


def test_every_argument_of_the_schema_converts_as_strawberry_converts_it() -> None:
    schema = build_schema()
    assert list(_fields_with_arguments(schema))
    assert _compare(schema) == []


@strawberry.enum
class Tone(Enum):
    WARM = "warm"
    COLD = "cold"


@strawberry.input
class Leaf:
    name: str
    nickname: str | None  # no default: Strawberry's implicit None when absent
    tones: list[Tone] | None = None
    tags: list[str | None] = strawberry.field(default_factory=list)


@strawberry.input
class Tree:
    leaf: Leaf
    children: list[Tree] | None = None
    parent: Tree | None = strawberry.UNSET
    size: int = 4
    tone: Tone = Tone.COLD
    extra: strawberry.scalars.JSON | None = None


@strawberry.input
class WithMaybe:
    note: strawberry.Maybe[str | None]
    tree: Tree | None = None


@strawberry.input
class WithGlobalId:
    node: strawberry.relay.GlobalID | None = None


@strawberry.type
class AwkwardQuery:
    @strawberry.field
    def tree(self, tree: Tree, trees: list[Tree | None] | None = None, count: int = 1) -> str:
        return ""

    @strawberry.field
    def maybe(self, value: WithMaybe, plain: str | None = None) -> str:
        return ""

    @strawberry.field
    def global_id(self, value: WithGlobalId, ids: list[strawberry.relay.GlobalID] | None = None) -> str:
        return ""

    @strawberry.field
    def some(self, value: strawberry.Maybe[int | None] = None) -> str:
        return ""


def test_awkward_inputs_convert_as_strawberry_converts_them() -> None:
    schema = strawberry.Schema(query=AwkwardQuery)
    assert _compare(schema) == []


def test_only_what_needs_strawberry_is_left_to_it() -> None:
    """A Maybe or a GlobalID anywhere inside a type leaves that argument to Strawberry; the rest is made."""
    schema = strawberry.Schema(query=AwkwardQuery)
    registry = schema.schema_converter.scalar_registry
    by_name = dict(_fields_with_arguments(schema))
    left = {
        where: [
            argument.python_name
            for argument in field.arguments
            if _left_to_strawberry(argument.type, registry, schema.config)
        ]
        for where, field in by_name.items()
    }
    assert left == {
        "AwkwardQuery.tree": [],
        "AwkwardQuery.maybe": ["value"],
        "AwkwardQuery.global_id": ["value", "ids"],
        "AwkwardQuery.some": ["value"],
    }
    server = build_schema()
    converted = fast_paths._arguments_plan(
        next(
            field for where, field in _fields_with_arguments(server) if where == "Mutation.start_run"
        ).arguments,
        server.schema_converter.scalar_registry,
        server.config,
    )
    assert converted is not None
    assert [(name, strawberry_type) for name, _, _, strawberry_type in converted] == [("input", None)]


def _left_to_strawberry(type_: Any, registry: Any, config: Any) -> bool:
    try:
        converter(type_, registry, config)
    except Unsupported:
        return True
    return False


def test_a_start_run_input_comes_out_whole() -> None:
    """What startRun's resolver receives, spelled out (beyond agreeing with Strawberry)."""
    schema = build_schema()
    field = next(field for where, field in _fields_with_arguments(schema) if where == "Mutation.start_run")
    graphql_type = schema._schema.mutation_type.fields["startRun"].args["input"].type  # type: ignore[union-attr]
    value = coerce_input_value(
        {
            "prompt": "hi",
            "sessionId": "s",
            "allowedTools": ["Read"],
            "agents": [{"name": "a", "description": "d", "prompt": "p"}],
        },
        graphql_type,
    )
    converted = fast_paths._convert_arguments(
        {"input": value}, field.arguments, schema.schema_converter.scalar_registry, schema.config
    )["input"]
    assert isinstance(converted, StartRunInput)
    assert converted.prompt == "hi"
    assert converted.session_id == "s"
    assert converted.allowed_tools == ["Read"]
    assert converted.allowed_tools is not value["allowedTools"]
    assert converted.agents is not None
    assert converted.agents[0].name == "a"
    assert converted.agents[0].tools is None
    assert converted.thinking is None
    assert converted.on_busy.name == "ENQUEUE"
    assert converted.output_schema is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_unset_stays_unset(variant: str) -> None:
    """An input field whose default is UNSET keeps it when absent (Tree.parent)."""
    schema = strawberry.Schema(query=AwkwardQuery)
    field = dict(_fields_with_arguments(schema))["AwkwardQuery.tree"]
    graphql_type = schema._schema.query_type.fields["tree"].args["tree"].type  # type: ignore[union-attr]
    value = coerce_input_value(_sample(graphql_type, variant), graphql_type)
    converted = fast_paths._convert_arguments(
        {"tree": value}, field.arguments, schema.schema_converter.scalar_registry, schema.config
    )["tree"]
    assert (converted.parent is UNSET) == ("parent" not in value)
