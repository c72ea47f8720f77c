"""Strawberry's extension hooks, with what it works out about each hook made once per extension class.

For every operation Strawberry builds four context managers (operation, parsing, validation, execution),
and each looks at every extension afresh: is the hook overridden, is it a generator function, an async
generator function or a plain callable, and wraps it (`contextlib.contextmanager` of a bound method:
`functools.update_wrapper`, a MethodType). With the schema's nine extensions that was 36 look-ups and
about ten wrappers per operation, a seventh of executing a startRun document. None of it depends on the
operation, only on the extension's class: `HookCache` keeps it per class and hook name, and per operation
only binds the wrapped hook to the extension (`contextmanager(hook)(extension)` makes the same context
manager as `contextmanager(MethodType(hook, extension))()`). Hooks that are plain callables, which
Strawberry wraps in a function of its own, still go its way.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)

# (extension class, hook name) -> None (not overridden), (wrapper, async?), or STRAWBERRYS (its own way).
_Made = tuple[Callable[..., Any], bool] | None
STRAWBERRYS: tuple[Any, bool] = (None, False)
_made: dict[tuple[type, str], _Made] = {}
# A process that makes extension classes on the fly would keep every one of them alive: past this many
# entries the cache starts again (an entry is cheap to make).
MAX_ENTRIES = 1024


def _make(cls: type, name: str) -> _Made:
    hook = getattr(cls, name)
    if hook is getattr(SchemaExtension, name):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    return STRAWBERRYS


class HookCache(ExtensionContextManagerBase):
    """`get_hook` answered from the per-class cache (see the module)."""

    __slots__ = ()

    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        try:
            made = _made[key]
        except KeyError:
            made = _make(*key)
            if len(_made) >= MAX_ENTRIES:
                _made.clear()
            _made[key] = made
        if made is None:
            return None
        if made is STRAWBERRYS:
            return super().get_hook(extension)
        wrapper, is_async = made
        return WrappedHook(extension=extension, hook=partial(wrapper, extension), is_async=is_async)


class CachedOperation(HookCache, OperationContextManager):
    __slots__ = ()


class CachedValidation(HookCache, ValidationContextManager):
    __slots__ = ()


class CachedParsing(HookCache, ParsingContextManager):
    __slots__ = ()


class CachedExecuting(HookCache, ExecutingContextManager):
    __slots__ = ()
