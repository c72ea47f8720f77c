"""Descriptions are the client's documentation: every type, field, argument and enum value has one."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    specified_scalar_types,
)
from graphql import build_schema as schema_from_sdl

from graphql_schema.schema import build_schema


def _documentable(named: GraphQLNamedType) -> Iterator[tuple[str, str | None]]:
    """(schema coordinate, description) of a type and of everything in it that takes a description."""
    yield named.name, named.description
    if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        for field_name, field in named.fields.items():
            yield f"{named.name}.{field_name}", field.description
            for arg_name, arg in field.args.items():
                yield f"{named.name}.{field_name}({arg_name}:)", arg.description
    elif isinstance(named, GraphQLInputObjectType):
        for field_name, input_field in named.fields.items():
            yield f"{named.name}.{field_name}", input_field.description
    elif isinstance(named, GraphQLEnumType):
        for value_name, value in named.values.items():
            yield f"{named.name}.{value_name}", value.description


def undocumented(schema: GraphQLSchema) -> list[str]:
    """Every coordinate without a description, leaving out introspection types and built-in scalars."""
    return [
        coordinate
        for name, named in sorted(schema.type_map.items())
        if not name.startswith("__") and name not in specified_scalar_types
        for coordinate, description in _documentable(named)
        if not (description and description.strip())
    ]


def test_every_type_field_argument_and_enum_value_has_a_description() -> None:
    missing = undocumented(build_schema()._schema)
    assert not missing, "no description (add description= in graphql_schema/):\n  " + "\n  ".join(missing)


def test_the_walk_catches_each_kind_of_coordinate() -> None:
    schema = schema_from_sdl(
        '''
        """Documented."""
        type Query { plain(arg: Int): Color  other(input: In): Thing }
        enum Color { RED }
        input In { x: Int }
        interface Thing { id: ID }
        scalar Opaque
        union Either = Query
        '''
    )
    assert undocumented(schema) == [
        "Color",
        "Color.RED",
        "Either",
        "In",
        "In.x",
        "Opaque",
        "Query.plain",
        "Query.plain(arg:)",
        "Query.other",
        "Query.other(input:)",
        "Thing",
        "Thing.id",
    ]
