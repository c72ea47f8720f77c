"""Shortcuts through Strawberry's per-value machinery, for what a page of events or sessions runs
hundreds of times per request. Each answers exactly what Strawberry's own path answers.

A union member's GraphQL type found by its Python class in one dict lookup: Strawberry resolves a union
value by trying each member type in turn (a cast check, then
`is_implemented_by` on each); a page of events runs that for every event and every content block, a
few per cent of the read's CPU. Every value this schema puts in a union is an instance of exactly one
member's class, so a map from the class to the type's name answers at once; anything else (a subclass,
a `strawberry.cast`) still goes through Strawberry's resolver.

A plain field (no resolver, no extension) read with one `getattr`: Strawberry's resolver for it calls
the field's `get_result` with fresh argument lists, which calls the configured default resolver
(`getattr`) with the field's Python name; three calls and two allocations for every such value.

A plain field of a scalar or enum type completed in place (`FastLeafExecutor`): graphql-core builds a
GraphQLResolveInfo (a 16-field tuple), a list of the field's nodes and the argument values for every
field it executes, then walks the type (non-null? list? leaf?) to complete the value; for a leaf read by
`getattr` none of that is used. It was most of the CPU of a page of events (a thousand-odd leaves).
The executor reads the attribute and coerces it with the type's own `coerce_output_value`; anything
out of the ordinary (a null for a non-null field, an exception, a value the type refuses, a field
middleware) goes through graphql-core's own `execute_field` instead, which reads the attribute again
and reports exactly what it always did. `__typename` (on every union member of a page) is answered with
the parent type's name, which is all graphql-core's resolver for it does.

Arguments that are all plain scalars (`first: Int`, `after: String`…) passed on as they came: for each
call of a resolver with arguments (a listing's `runs(first:)`, once per session) Strawberry's
`convert_arguments` walks every argument's type (optional? Maybe? list? input? enum? GlobalID?) to find
that a scalar's value is kept as it is. The check is made once per field (`convert_scalar_arguments`);
any other field still has Strawberry's conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLAbstractType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLTypeResolver,
    GraphQLUnionType,
    Undefined,
    is_leaf_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path
from graphql.type.introspection import TypeNameMetaFieldDef
from strawberry import Schema, relay
from strawberry.scalars import is_scalar
from strawberry.schema import schema_converter
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.arguments import StrawberryArgument
from strawberry.types.base import StrawberryMaybe, StrawberryObjectDefinition, StrawberryOptional
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE


def apply_fast_paths(schema: Schema) -> None:
    resolve_unions_by_class(schema)
    resolve_plain_fields_directly(schema)
    convert_scalar_arguments()


def resolve_plain_fields_directly(schema: Schema) -> None:
    """Replace Strawberry's resolver of every plain field with a direct `getattr` of its Python name."""
    if schema.config.default_resolver is not getattr:
        return
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition) or definition.is_input:
            continue
        fields = getattr(concrete.implementation, "fields", {})
        for field in definition.fields:
            graphql_field = fields.get(schema.config.name_converter.get_graphql_name(field))
            # Only what Strawberry itself serves by its basic-field path (no resolver, no extension, no
            # exception handler).
            if graphql_field is None or getattr(graphql_field.resolve, "__name__", "") != "_get_basic_result":
                continue
            if not field.is_basic_field:
                continue
            graphql_field.resolve = _attribute(field.python_name, graphql_field.type)


def _attribute(name: str, graphql_type: GraphQLOutputType) -> Callable[[Any, Any], Any]:
    def resolve(source: Any, _info: Any) -> Any:
        return getattr(source, name)

    resolve._is_default = True  # type: ignore[attr-defined]
    non_null = isinstance(graphql_type, GraphQLNonNull)
    leaf = graphql_type.of_type if non_null else graphql_type  # type: ignore[union-attr]
    if is_leaf_type(leaf):
        resolve._leaf = (name, non_null, leaf.coerce_output_value)  # type: ignore[attr-defined]
    return resolve


class FastLeafExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with plain scalar and enum fields completed in place (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Strawberry always passes a manager; it wraps resolvers only when an extension has a `resolve`.
        manager = self.middleware_manager
        self._leaves_in_place = manager is None or not manager.middlewares

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        field_def = self.schema.get_field(parent_type, node.name.value)
        if field_def is TypeNameMetaFieldDef and self._leaves_in_place:
            # Its resolver answers `info.parent_type.name`, a String! that is already a str.
            return parent_type.name
        leaf = getattr(field_def.resolve, "_leaf", None) if field_def is not None else None
        if leaf is not None and self._leaves_in_place and not node.arguments:
            name, non_null, coerce = leaf
            try:
                value = getattr(source, name)
                if value is None:
                    if not non_null:
                        return None
                elif value is not Undefined and not isinstance(value, Exception):
                    coerced = coerce(value)
                    if coerced is not None and coerced is not Undefined:
                        return coerced
            except Exception:  # graphql-core's own path below reports it as it always did
                pass
        return super().execute_field(parent_type, source, field_details_list, path, position_context)


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


_strawberry_convert_arguments: Callable[..., dict[str, Any]] = getattr(  # noqa: B009
    schema_converter, "convert_arguments"
)
# (id of a field's argument list, of the config, of the scalar registry) -> those three themselves (kept
# alive, so none of the ids can name another object while the entry lives) and the arguments' (GraphQL
# name, Python name) pairs, or None when Strawberry converts them.
_Plan = tuple[tuple[str, str], ...] | None
_plans: dict[tuple[int, int, int], tuple[list[StrawberryArgument], StrawberryConfig, Any, _Plan]] = {}


def convert_scalar_arguments() -> None:
    """Arguments of plain scalar types passed on as they came (see the module); the converter Strawberry's
    resolvers call (a module global of its schema converter) is replaced once, for every schema."""
    setattr(schema_converter, "convert_arguments", _convert_arguments)  # noqa: B010


def _convert_arguments(
    value: dict[str, Any],
    arguments: list[StrawberryArgument],
    scalar_registry: Any,
    config: StrawberryConfig,
    info: Any = None,
) -> dict[str, Any]:
    key = (id(arguments), id(config), id(scalar_registry))
    entry = _plans.get(key)
    if entry is None:
        entry = (arguments, config, scalar_registry, _plan(arguments, scalar_registry, config))
        _plans[key] = entry
    plan = entry[3]
    if plan is None:
        return _strawberry_convert_arguments(value, arguments, scalar_registry, config, info)
    return {python: value[name] for name, python in plan if name in value}


def _plan(arguments: list[StrawberryArgument], scalar_registry: Any, config: StrawberryConfig) -> _Plan:
    """The names of arguments Strawberry's `convert_argument` would return unchanged (a scalar other than
    GlobalID, or an optional one; its value, None and UNSET alike, is kept), or None if any is not such."""
    names = []
    for argument in arguments:
        type_ = argument.type
        if isinstance(type_, StrawberryMaybe):
            return None
        if isinstance(type_, StrawberryOptional):
            type_ = type_.of_type
        if type_ is relay.GlobalID or not is_scalar(type_, scalar_registry) or argument.python_name is None:
            return None
        names.append((config.name_converter.from_argument(argument), argument.python_name))
    return tuple(names)
