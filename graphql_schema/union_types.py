"""A union member's GraphQL type found by its Python class in one dict lookup.

Strawberry resolves a union value by trying each member type in turn (a cast check, then
`is_implemented_by` on each); a page of events runs that for every event and every content block, a
few per cent of the read's CPU. Every value this schema puts in a union is an instance of exactly one
member's class, so a map from the class to the type's name answers at once; anything else (a subclass,
a `strawberry.cast`) still goes through Strawberry's resolver.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLAbstractType, GraphQLTypeResolver, GraphQLUnionType
from strawberry import Schema
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE


def resolve_unions_by_class(schema: Schema) -> None:
    """Give every union of `schema` a class -> type name map in front of Strawberry's resolver."""
    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLUnionType) or graphql_type.resolve_type is None:
            continue
        by_class: dict[type, str] = {}
        for member in graphql_type.types:
            definition = schema.schema_converter.type_map[member.name].definition
            if isinstance(definition, StrawberryObjectDefinition) and not definition.is_graphql_generic:
                by_class[definition.origin] = member.name
        graphql_type.resolve_type = _by_class(by_class, graphql_type.resolve_type)


def _by_class(by_class: dict[type, str], fallback: GraphQLTypeResolver) -> GraphQLTypeResolver:
    def resolve_type(root: Any, info: Any, abstract: GraphQLAbstractType) -> Any:
        name = by_class.get(type(root))
        if name is not None and getattr(root, TYPE_CAST_ATTRIBUTE, None) is None:
            return name
        return fallback(root, info, abstract)

    return resolve_type
