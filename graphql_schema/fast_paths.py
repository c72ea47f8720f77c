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

Plain fields are marked for graphql_schema/fast_executor.py, which completes them in place: a scalar or
enum field with how to read and coerce it (`_leaf`), a field of an object type, a union told by class
or a list of those with the object types its values complete as (`_value`).

An async resolver with plain scalar arguments (a connection's `runs(first:)`, `checkpoints`, the root
fields) called without Strawberry's layers around it (`call_resolvers_directly`): for each call Strawberry
builds its Info, wraps the resolver's coroutine in one of its own, converts the arguments, chains the
field's extensions (none) and goes through `get_result` and the resolver object's `__call__`, all to call
the function with the source, the Info and the arguments. A listing's `runs(first: 5)` runs that once per
session. fast_executor.py calls the marked function itself, with the arguments graphql-core coerced once
per operation and named as Strawberry names them; a field with an extension (permission classes are one),
an exception handler, a `root`/`parent` parameter or any argument Strawberry would convert keeps
Strawberry's resolver.

Arguments converted by converters made once per argument type (graphql_schema/input_converters.py): for
each call of a resolver with arguments (a mutation's `input:`, a listing's `runs(first:)`, once per
session) Strawberry's `convert_arguments` walks every argument's type (optional? Maybe? list? input?
enum? GlobalID?), and for an input every field's name and type, all again; a follow-up startRun's input
took about 0.2 ms to convert, a third of executing the mutation. The walk is made once per field
(`_arguments_plan`); a type it does not handle is converted by Strawberry's `convert_argument` still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from graphql import (
    GraphQLAbstractType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLTypeResolver,
    GraphQLUnionType,
    is_leaf_type,
)
from strawberry import Schema, relay
from strawberry.scalars import is_scalar
from strawberry.schema import schema_converter
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import StrawberryArgument, convert_argument
from strawberry.types.base import StrawberryMaybe, StrawberryObjectDefinition, StrawberryOptional
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField

from graphql_schema.input_converters import Converter, Unsupported, converter


def apply_fast_paths(schema: Schema) -> None:
    resolve_unions_by_class(schema)
    resolve_plain_fields_directly(schema)
    convert_scalar_arguments()
    call_resolvers_directly(schema)


def resolve_plain_fields_directly(schema: Schema) -> None:
    """Replace Strawberry's resolver of every plain field with a direct `getattr` of its Python name."""
    if schema.config.default_resolver is not getattr:
        return
    # Only what Strawberry itself serves by its basic-field path (no resolver, no extension, no exception
    # handler).
    for field, graphql_field in _output_fields(schema, "_get_basic_result"):
        if field.is_basic_field:
            graphql_field.resolve = _attribute(field.python_name, graphql_field.type)


def _output_fields(schema: Schema, resolved_by: str) -> Iterator[tuple[StrawberryField, GraphQLField]]:
    """Every field of the schema's output types, with its graphql-core field, whose resolver Strawberry
    made as the function named `resolved_by`."""
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition) or definition.is_input:
            continue
        fields = getattr(concrete.implementation, "fields", {})
        for field in definition.fields:
            graphql_field = fields.get(schema.config.name_converter.get_graphql_name(field))
            if graphql_field is not None and getattr(graphql_field.resolve, "__name__", "") == resolved_by:
                yield field, graphql_field


def _attribute(name: str, graphql_type: GraphQLOutputType) -> Callable[[Any, Any], Any]:
    def resolve(source: Any, _info: Any) -> Any:
        return getattr(source, name)

    resolve._is_default = True  # type: ignore[attr-defined]
    non_null = isinstance(graphql_type, GraphQLNonNull)
    named = graphql_type.of_type if non_null else graphql_type  # type: ignore[union-attr]
    if is_leaf_type(named):
        resolve._leaf = (name, non_null, named.coerce_output_value)  # type: ignore[attr-defined]
        return resolve
    shape = value_shape(graphql_type)
    if shape is not None:
        resolve._value = (name, shape)  # type: ignore[attr-defined]
    return resolve


# (non-null?, the list's item type or None, items non-null?, the object type, or a union's class -> member)
Shape = tuple[
    bool, GraphQLOutputType | None, bool, GraphQLObjectType | None, dict[type, GraphQLObjectType] | None
]


def value_shape(graphql_type: GraphQLOutputType) -> Shape | None:
    """How fast_executor completes a value of `graphql_type` in place: an object type without
    `is_type_of` (graphql-core completes whatever value against it), a union whose members are told by
    their class (resolve_unions_by_class), or a list of either; None for anything else (the long way)."""
    non_null = isinstance(graphql_type, GraphQLNonNull)
    named: Any = graphql_type.of_type if non_null else graphql_type  # type: ignore[union-attr]
    item_type: GraphQLOutputType | None = None
    item_non_null = False
    if isinstance(named, GraphQLList):
        item_type = named.of_type
        item_non_null = isinstance(item_type, GraphQLNonNull)
        named = item_type.of_type if item_non_null else item_type  # type: ignore[union-attr]
    if isinstance(named, GraphQLObjectType):
        if named.is_type_of is not None:
            return None
        return non_null, item_type, item_non_null, named, None
    if isinstance(named, GraphQLUnionType):
        members = getattr(named.resolve_type, "_member_types", None)
        if members:
            return non_null, item_type, item_non_null, None, members
    return None


def resolve_unions_by_class(schema: Schema) -> None:
    """Give every union of `schema` a class -> type name map in front of Strawberry's resolver."""
    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLUnionType) or graphql_type.resolve_type is None:
            continue
        by_class: dict[type, str] = {}
        member_types: dict[type, GraphQLObjectType] = {}
        for member in graphql_type.types:
            definition = schema.schema_converter.type_map[member.name].definition
            if isinstance(definition, StrawberryObjectDefinition) and not definition.is_graphql_generic:
                by_class[definition.origin] = member.name
                # graphql-core calls a member's is_type_of after resolve_type: it goes the long way.
                if member.is_type_of is None:
                    member_types[definition.origin] = member
        resolve_type = _by_class(by_class, graphql_type.resolve_type)
        resolve_type._member_types = member_types  # type: ignore[attr-defined]
        graphql_type.resolve_type = resolve_type


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
# One argument: its GraphQL name, its Python name, its converter (None: the value as it came), and its
# Strawberry type when Strawberry's own `convert_argument` converts it (input_converters.Unsupported).
_Step = tuple[str, str, Converter | None, Any]
_ArgumentsPlan = tuple[_Step, ...] | None
# (id of a field's argument list, of the config, of the scalar registry) -> those three themselves (kept
# alive, so none of the ids can name another object while the entry lives) and how to convert the
# arguments, or None when Strawberry converts them all. A server's schema has a few dozen fields with
# arguments; a process that builds schema after schema (the tests) would keep every one of them alive, so
# past MAX_PLANS entries the map starts again (a plan is cheap to make).
_PlanEntry = tuple[list[StrawberryArgument], StrawberryConfig, Any, _ArgumentsPlan]
_plans: dict[tuple[int, int, int], _PlanEntry] = {}
MAX_PLANS = 1024


def convert_scalar_arguments() -> None:
    """Arguments converted as planned once per field (see the module and graphql_schema/input_converters.py);
    the converter Strawberry's resolvers call (a module global of its schema converter) is replaced once,
    for every schema."""
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
        entry = (arguments, config, scalar_registry, _arguments_plan(arguments, scalar_registry, config))
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        _plans[key] = entry
    plan = entry[3]
    if plan is None:
        return _strawberry_convert_arguments(value, arguments, scalar_registry, config, info)
    kwargs: dict[str, Any] = {}
    for name, python_name, convert, by_strawberry in plan:
        if name in value:
            if by_strawberry is not None:
                kwargs[python_name] = convert_argument(
                    value[name], by_strawberry, scalar_registry, config, info, path=(name,)
                )
            elif convert is None:
                kwargs[python_name] = value[name]
            else:
                kwargs[python_name] = convert(value[name])
    return kwargs


def _arguments_plan(
    arguments: list[StrawberryArgument], scalar_registry: Any, config: StrawberryConfig
) -> _ArgumentsPlan:
    """How `_convert_arguments` converts each argument: by a converter made for its type, or, for a type
    input_converters leaves to Strawberry, by Strawberry's `convert_argument`; None (Strawberry's
    `convert_arguments` for all) when an argument has no Python name, which Strawberry asserts."""
    steps: list[_Step] = []
    for argument in arguments:
        if argument.python_name is None:
            return None
        type_ = argument.type
        try:
            steps.append(
                (
                    config.name_converter.from_argument(argument),
                    argument.python_name,
                    converter(type_, scalar_registry, config),
                    None,
                )
            )
        except Unsupported:
            steps.append((config.name_converter.from_argument(argument), argument.python_name, None, type_))
    return tuple(steps)


# The arguments' (GraphQL name, Python name) pairs, or None when not all of them are plain scalars.
_Plan = tuple[tuple[str, str], ...] | None


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


# (the resolver's function, pass the source first?, the Info parameter's name or None, the Info class,
# the Strawberry field, the arguments' (GraphQL name, Python name) pairs)
DirectCall = tuple[Callable[..., Any], bool, str | None, type, StrawberryField, tuple[tuple[str, str], ...]]


def call_resolvers_directly(schema: Schema) -> None:
    """Mark every async resolver Strawberry would only call (see the module) with how to call it."""
    converter = schema.schema_converter
    handlers_of = getattr(converter, "_get_field_exception_handlers", None)
    if handlers_of is None:  # a Strawberry this was not written against: keep its resolvers
        return
    for field, graphql_field in _output_fields(schema, "_async_resolver"):
        resolver = field.base_resolver
        if (
            resolver is None
            or field.extensions
            or not field.is_async
            or handlers_of(field)
            or resolver.root_parameter is not None
            or resolver.parent_parameter is not None
            or not callable(resolver.wrapped_func)
        ):
            continue
        arguments = _plan(field.arguments, converter.scalar_registry, schema.config)
        if arguments is None:
            continue
        info = resolver.info_parameter
        graphql_field.resolve._call = (  # type: ignore[union-attr]  # a function: _output_fields
            resolver.wrapped_func,
            resolver.self_parameter is not None,
            info.name if info is not None else None,
            schema.config.info_class,
            field,
            arguments,
        )
