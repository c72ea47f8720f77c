"""Strawberry's executor with the values of plain fields completed in place (`FastLeafExecutor`).

graphql-core executes every field the same way: a Path, a GraphQLResolveInfo (a 16-field tuple) and a
list of the field's nodes, the resolver, then `complete_value` walks the type (non-null? list? leaf?
abstract? object?) down to the value, and for every object of a list it walks the list's item type
again, resolves a union member through `resolve_type` and `ensure_valid_runtime_type`, and collects
the object's fields. A page of events (a hundred events, their payloads and content blocks: about 300
objects and a thousand leaves) spent most of its CPU there, none of it needed for a field read by
`getattr` (fast_paths.resolve_plain_fields_directly marks those).

So `execute_fields` walks a plan made once per object type and field set of an operation: `__typename`
is the type's name; a plain scalar or enum field is read and coerced with the type's own
`coerce_output_value`; a plain field of an object type, a union whose members are told by their class
(fast_paths.resolve_unions_by_class), or a list of those, is read and its objects' fields executed
through graphql-core's own `collect_and_execute_subfields`, with graphql-core's error handling
(`handle_field_error` at the field's and the item's path, the same settling of pending work). Anything
out of the ordinary goes through graphql-core's own `execute_field` before anything of the field has
run, which reads the attribute again and reports exactly what it always did: a null for a non-null
field or item, an exception, a value that is an Exception or awaitable, a value the type refuses, an
object no member's class matches (a subclass, a `strawberry.cast`), a type with `is_type_of`, a list
that is not a list or tuple, a field with arguments or directives (`@stream`), a deferred field, and
every field at all when a field middleware runs (an extension with `resolve`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from graphql import GraphQLField, GraphQLObjectType, GraphQLOutputType, Undefined
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, gather_with_cancel
from graphql.type.introspection import TypeNameMetaFieldDef
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE

from graphql_schema.fast_paths import DirectCall, value_shape
from graphql_schema.fast_paths import Shape as _Shape

# How a field of a plan is executed.
_TYPENAME, _LEAF, _VALUE, _CALL, _GENERIC = range(5)
# A plan entry: (response name, the field's details, how, what that needs).
_Step = tuple[str, FieldDetailsList, int, Any]
_MISS = object()  # "not in place": graphql-core's execute_field takes the field
MAX_PLANS = 256  # plans kept per operation (a subscription's lifetime included)


class FastLeafExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with plain fields completed in place (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Strawberry always passes a manager; it wraps resolvers only when an extension has a `resolve`.
        manager = self.middleware_manager
        self._in_place = manager is None or not manager.middlewares
        # id(grouped field set) -> (that set, its parent type, its plan). Per operation (per subscription
        # event): a field set is collected per operation (its @skip/@include depend on the variables). The
        # set is kept so its id stays its own.
        self._plans: dict[int, tuple[GroupedFieldSet, GraphQLObjectType, list[_Step]]] = {}
        # id(a field's type) -> (that type, its shape or None), for what resolvers return.
        self._shapes: dict[int, tuple[GraphQLOutputType, _Shape | None]] = {}

    def build_per_event_executor(self, payload: Any) -> Any:
        """A subscription event's copy of the executor, with memos of its own: every event collects its
        root fields anew, and graphql-core memoizes the fields below them by the identity of those, so
        memos shared by the copies (a shallow copy) grew by a few entries per event, for as long as the
        subscription lived, without a single hit."""
        executor = super().build_per_event_executor(payload)
        if isinstance(executor, FastLeafExecutor):
            executor._plans = {}
            executor._relevant_sub_fields = {}
        return executor

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        if not self._in_place:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        known = self._plans.get(id(grouped_field_set))
        if known is not None and known[0] is grouped_field_set and known[1] is parent_type:
            plan = known[2]
        else:
            plan = self._plan(parent_type, grouped_field_set)
            # The root's fields are collected once per execution: their plan is not kept. Bounded all the
            # same, in case some path collects fields anew for every object.
            if path is not None:
                if len(self._plans) >= MAX_PLANS:
                    self._plans.clear()
                self._plans[id(grouped_field_set)] = (grouped_field_set, parent_type, plan)
        # graphql-core's execute_fields, with the plan's shortcuts in front of its execute_field.
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        generic_field = super().execute_field
        try:
            for response_name, details, how, need in plan:
                if how == _LEAF:
                    # _leaf, inline: a page of events has a thousand-odd leaves.
                    name, non_null, coerce = need
                    try:
                        value = getattr(source_value, name)
                        if value is None:
                            if not non_null:
                                results[response_name] = None
                                continue
                        elif value is not Undefined and not isinstance(value, Exception):
                            coerced = coerce(value)
                            if coerced is not None and coerced is not Undefined:
                                results[response_name] = coerced
                                continue
                    except Exception:  # graphql-core's own path below reports it as it always did
                        pass
                elif how == _TYPENAME:
                    results[response_name] = need
                    continue
                elif how == _CALL:
                    value = self._call(
                        parent_type, source_value, path, response_name, details, need, position_context
                    )
                    results[response_name] = value
                    if is_awaitable(value):
                        awaitable_fields.append(response_name)
                    continue
                elif how == _VALUE:
                    value = self._value(
                        parent_type, source_value, path, response_name, details, need, position_context
                    )
                    if value is not _MISS:
                        results[response_name] = value
                        if is_awaitable(value):
                            awaitable_fields.append(response_name)
                        continue
                field_path = Path(path, response_name, parent_type.name)
                result = generic_field(parent_type, source_value, details, field_path, position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise

        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """The leaves in place for graphql-core's other callers of execute_field (a mutation's root fields
        run one by one, deferred fields)."""
        if self._in_place:
            node = field_details_list[0].node
            field_def = self.schema.get_field(parent_type, node.name.value)
            if field_def is TypeNameMetaFieldDef:
                return parent_type.name
            leaf = getattr(field_def.resolve, "_leaf", None) if field_def is not None else None
            if leaf is not None and not node.arguments:
                value = _leaf(source, leaf)
                if value is not _MISS:
                    return value
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet) -> list[_Step]:
        plan: list[_Step] = []
        for response_name, details in grouped_field_set.items():
            node = details[0].node
            field_def = self.schema.get_field(parent_type, node.name.value)
            how: int = _GENERIC
            need: Any = None
            if field_def is TypeNameMetaFieldDef:
                # Its resolver answers `info.parent_type.name`, a String! that is already a str.
                how, need = _TYPENAME, parent_type.name
            elif field_def is not None and (call := getattr(field_def.resolve, "_call", None)) is not None:
                need = self._call_plan(field_def, details, call)
                how = _CALL if need is not None else _GENERIC
            elif field_def is not None and not any(d.node.arguments for d in details):
                leaf = getattr(field_def.resolve, "_leaf", None)
                value = getattr(field_def.resolve, "_value", None)
                if leaf is not None:
                    how, need = _LEAF, leaf
                elif value is not None and all(
                    not d.node.directives and d.defer_usage is None and d.fragment_variable_values is None
                    for d in details
                ):
                    how, need = _VALUE, (*value, field_def.type)
            plan.append((response_name, details, how, need))
        return plan

    def _call_plan(self, field_def: GraphQLField, details: FieldDetailsList, call: DirectCall) -> Any:
        """How to call a resolver fast_paths.call_resolvers_directly marked, with its arguments as
        graphql-core coerces them (they depend on the operation's variables only, so once per plan) and
        named as Strawberry names them; None when coercing them fails (graphql-core's own path reports it
        at every place the field is executed)."""
        first = details[0]
        try:
            if field_def.args or first.node.arguments:
                args = get_argument_values(
                    field_def,
                    first.node,
                    self.variable_values,
                    first.fragment_variable_values,
                    self.hide_suggestions,
                )
            else:
                args = {}
        except Exception:
            return None
        function, pass_source, info_name, info_class, field, names = call
        kwargs = {python: args[name] for name, python in names if name in args}
        return (
            field_def,
            [d.node for d in details],
            function,
            pass_source,
            info_name,
            info_class,
            field,
            kwargs,
        )

    def _call(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        path: Path | None,
        response_name: str,
        details: FieldDetailsList,
        need: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's execute_field for a resolver marked by fast_paths.call_resolvers_directly: the
        resolver's function called as Strawberry calls it (the source first, its Info, its arguments), and
        what it returns completed and its errors handled as graphql-core does."""
        field_def, field_nodes, function, pass_source, info_name, info_class, field, kwargs = need
        field_path = Path(path, response_name, parent_type.name)
        info = self.build_resolve_info(field_def, field_nodes, parent_type, field_path)
        return_type = field_def.type
        try:
            arguments = dict(kwargs)  # the resolver's own, as Strawberry's are for every call
            if info_name is not None:
                arguments[info_name] = info_class(_raw_info=info, _field=field)
            result = function(source, **arguments) if pass_source else function(**arguments)
            if self.is_awaitable(result):
                return self.complete_awaitable_value(
                    return_type, details, info, field_path, result, position_context
                )
            completed = self.complete_value(return_type, details, info, field_path, result, position_context)
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, details, field_path)
            return completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, field_path)
            return None

    def _value(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        path: Path | None,
        response_name: str,
        details: FieldDetailsList,
        need: tuple[str, _Shape, GraphQLOutputType],
        position_context: Any,
    ) -> Any:
        """A plain field of an object, union or list of them, completed as graphql-core's execute_field
        completes it, or _MISS before anything of it ran."""
        name, shape, return_type = need
        try:
            value = getattr(source, name)
        except Exception:  # graphql-core's own path reports it as it always did
            return _MISS
        if value is None:
            return _MISS if shape[0] else None
        field_path = Path(path, response_name, parent_type.name)
        try:
            completed = self._complete_shaped(shape, details, field_path, value, position_context)
            if completed is _MISS:
                return _MISS
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, details, field_path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, field_path)
            return None
        return completed

    def complete_value(
        self,
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: Any,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """What a resolver returned (a page of events, a connection's edges), completed in place when its
        type has a shape (fast_paths.value_shape) and nothing about it is out of the ordinary."""
        if self._in_place and result is not None:
            known = self._shapes.get(id(return_type))
            if known is None or known[0] is not return_type:
                known = self._shapes[id(return_type)] = (return_type, value_shape(return_type))
            shape = known[1]
            if shape is not None and not any(d.node.directives for d in field_details_list):
                completed = self._complete_shaped(shape, field_details_list, path, result, position_context)
                if completed is not _MISS:
                    return completed
        return super().complete_value(return_type, field_details_list, info, path, result, position_context)

    def _complete_shaped(
        self, shape: _Shape, details: FieldDetailsList, path: Path, value: Any, position_context: Any
    ) -> Any:
        """graphql-core's complete_value of a value that is not None, for a type of this shape; raises what
        it raises, or returns _MISS before anything ran."""
        _non_null, item_type, item_non_null, object_type, by_class = shape
        if item_type is None:
            runtime = self._runtime_type(value, object_type, by_class)
            if runtime is None:
                return _MISS
            return self._subfields(runtime, details, path, value, position_context)
        if type(value) is not list and type(value) is not tuple:
            return _MISS
        # Every item checked before any runs: a null for a non-null item or an unknown object goes the
        # long way as a whole, so what graphql-core reports for it is reported unchanged.
        runtimes: list[GraphQLObjectType | None] = []
        for item in value:
            if item is None:
                if item_non_null:
                    return _MISS
                runtimes.append(None)
                continue
            runtime = self._runtime_type(item, object_type, by_class)
            if runtime is None:
                return _MISS
            runtimes.append(runtime)
        return self._complete_items(value, runtimes, item_type, details, path, position_context)

    def _subfields(
        self,
        runtime: GraphQLObjectType,
        details: FieldDetailsList,
        path: Path,
        value: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's collect_and_execute_subfields; without a deferred fragment in reach, straight to
        execute_fields, as the IncrementalExecutor's execute_collected_subfields goes then."""
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(runtime, details)
        if position_context is None and not new_defer_usages:
            return self.execute_fields(runtime, value, path, grouped_field_set, None)
        return self.execute_collected_subfields(
            runtime, value, path, grouped_field_set, new_defer_usages, position_context
        )

    def _runtime_type(
        self,
        value: Any,
        object_type: GraphQLObjectType | None,
        by_class: dict[type, GraphQLObjectType] | None,
    ) -> GraphQLObjectType | None:
        """The object type graphql-core would complete `value` as, when that takes nothing out of the
        ordinary; None otherwise."""
        if value is Undefined or isinstance(value, Exception) or self.is_awaitable(value):
            return None
        if object_type is not None:
            return object_type
        assert by_class is not None
        runtime = by_class.get(type(value))
        if runtime is None or getattr(value, TYPE_CAST_ATTRIBUTE, None) is not None:
            return None
        return runtime

    def _complete_items(
        self,
        items: list[Any] | tuple[Any, ...],
        runtimes: list[GraphQLObjectType | None],
        item_type: GraphQLOutputType,
        details: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """graphql-core's complete_iterable_value and complete_list_item_value for checked items."""
        completed_results: list[Any] = []
        awaitable_indices: list[int] = []
        is_awaitable = self.is_awaitable
        try:
            for index, item in enumerate(items):
                runtime = runtimes[index]
                if runtime is None:
                    completed_results.append(None)
                    continue
                item_path = path.add_key(index, None)
                try:
                    completed = self._subfields(runtime, details, item_path, item, position_context)
                    if is_awaitable(completed):
                        completed_results.append(self._await_item(completed, item_type, details, item_path))
                        awaitable_indices.append(index)
                    else:
                        completed_results.append(completed)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, item_type, details, item_path)
                    completed_results.append(None)
        except Exception:
            if awaitable_indices:
                self.settle_in_background([completed_results[index] for index in awaitable_indices])
            raise

        if not awaitable_indices:
            return completed_results

        async def get_completed_results() -> list[Any]:
            if len(awaitable_indices) == 1:
                index = awaitable_indices[0]
                completed_results[index] = await completed_results[index]
            else:
                awaited = await gather_with_cancel(*(completed_results[index] for index in awaitable_indices))
                for index, sub_result in zip(awaitable_indices, awaited, strict=True):
                    completed_results[index] = sub_result
            return completed_results

        return get_completed_results()

    async def _await_item(
        self, completed: Awaitable[Any], item_type: GraphQLOutputType, details: FieldDetailsList, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, item_type, details, path)
            return None

    async def _await_completed(
        self, completed: Awaitable[Any], return_type: GraphQLOutputType, details: FieldDetailsList, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, path)
            return None


def _leaf(source: Any, leaf: tuple[str, bool, Any]) -> Any:
    """A plain scalar or enum field's completed value, or _MISS when graphql-core's path must answer."""
    name, non_null, coerce = leaf
    try:
        value = getattr(source, name)
        if value is None:
            return _MISS if non_null else None
        if value is not Undefined and not isinstance(value, Exception):
            coerced = coerce(value)
            if coerced is not None and coerced is not Undefined:
                return coerced
    except Exception:  # graphql-core's own path below reports it as it always did
        pass
    return _MISS
