"""Input values converted by a converter made once per argument type, not by walking the type per request.

For every argument of every call, Strawberry's `convert_argument` works out what its type is (Maybe?
optional? a list? a leaf? lazy? an enum? an input?), and for an input type, for each of its fields, the
field's GraphQL name (`name_converter.from_field`, `to_camel_case`) and its resolved type, all again,
recursively: about 35 calls for one `startRun(input:)`, a third of the CPU of executing the mutation
document. None of that depends on the value, so `converter` answers it once per type and returns a function
that only does what depends on the value: a list copied or converted item by item, an input's
keyword arguments gathered and its class called.

What it makes answers exactly as `convert_argument` answers (tests/graphql/test_input_converters.py
compares them over every input type of the schema). A type whose conversion needs what it does not
handle, anywhere inside it, is left to Strawberry entirely (`Unsupported`): `Maybe` (it wraps values in
`Some` and refuses some nulls), a GlobalID (decoded per value), a `LazyType`, a generic input, an input
with its own `from_input` (which wants the Info and the value's path), or a type Strawberry itself
refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any

from strawberry import relay
from strawberry.scalars import is_scalar
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

# Converts one value of a type; None stands for "the value as it is" (a leaf, or an optional leaf).
Converter = Callable[[Any], Any]


class Unsupported(Exception):
    """The type (or a type inside it) is converted by Strawberry's own `convert_argument`."""


def converter(type_: Any, scalar_registry: Mapping[Any, Any], config: StrawberryConfig) -> Converter | None:
    """The converter of values of `type_` (an argument's or an input field's Strawberry type), None when
    Strawberry keeps every value as it is. Raises Unsupported (see the module)."""
    return _Builder(scalar_registry, config).build(type_)


class _Builder:
    def __init__(self, scalar_registry: Mapping[Any, Any], config: StrawberryConfig) -> None:
        self.scalar_registry = scalar_registry
        self.config = config
        # An input type's converter, made before its fields' so an input that contains itself terminates.
        self.inputs: dict[type, Converter] = {}

    def build(self, type_: Any) -> Converter | None:
        # In convert_argument's order: Maybe before optional (it extends it), optional before the checks
        # of None and UNSET (which every converter below makes first), then list, leaf, lazy, enum, input.
        if isinstance(type_, (StrawberryMaybe, LazyType)):
            raise Unsupported(type_)
        if isinstance(type_, StrawberryOptional):
            return self.build(type_.of_type)
        if isinstance(type_, StrawberryList):
            return self._list(type_.of_type)
        if self._is_leaf(type_):
            if type_ is relay.GlobalID:
                raise Unsupported(type_)
            return None
        if has_enum_definition(type_):
            # Strawberry converts it as its enum definition: a leaf, kept as it is.
            return None
        if has_object_definition(type_):
            return self._input(type_)
        raise Unsupported(type_)

    def _is_leaf(self, type_: Any) -> bool:
        return is_scalar(type_, self.scalar_registry) or isinstance(type_, StrawberryEnumDefinition)

    def _list(self, item: Any) -> Converter:
        # An optional item (a Maybe too: it extends StrawberryOptional) of a leaf counts as a leaf.
        inner = item.of_type if isinstance(item, StrawberryOptional) else item
        if isinstance(inner, LazyType) or inner is relay.GlobalID:
            raise Unsupported(item)
        if self._is_leaf(inner):
            # Items kept, the list copied: graphql-core gives every request that omits the value the same
            # default list, so a change to it must not reach the next request.
            return _copied_list
        convert_item = self.build(item)
        if convert_item is None:
            return _copied_list

        def convert(value: Any) -> Any:
            if value is None or value is UNSET:
                return value
            return [convert_item(entry) for entry in value]

        return convert

    def _input(self, cls: Any) -> Converter:
        known = self.inputs.get(cls)
        if known is not None:
            return known
        definition = cls.__strawberry_definition__
        if definition.from_input is not None or definition.is_graphql_generic:
            raise Unsupported(cls)
        # Strawberry's implicit None for every input field without a default (graphql-core has made sure
        # the required ones are there).
        implicit: dict[str, Any] = (
            {
                field.python_name: None
                for field in definition.fields
                if field.default_value is MISSING and field.default_factory is MISSING
            }
            if definition.is_input
            else {}
        )
        fields: list[tuple[str, str, Converter | None]] = []

        def convert(value: Any) -> Any:
            if value is None or value is UNSET:
                return value
            kwargs = implicit.copy()
            for name, python_name, convert_field in fields:
                if name in value:
                    field_value = value[name]
                    kwargs[python_name] = field_value if convert_field is None else convert_field(field_value)
            return cls(**kwargs)

        self.inputs[cls] = convert
        name_of = self.config.name_converter.from_field
        for field in definition.fields:
            fields.append(
                (
                    name_of(field),
                    field.python_name,
                    self.build(field.resolve_type(type_definition=definition)),
                )
            )
        return convert


def _copied_list(value: Any) -> Any:
    if value is None or value is UNSET:
        return value
    return list(value)
