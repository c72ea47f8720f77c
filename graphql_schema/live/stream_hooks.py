"""Strawberry's per-result extension hooks, cheap for the results of a subscription that carry no errors.

For every event and every subscriber Strawberry builds the ``on_stream_result`` context managers of every
extension anew (inspecting each hook and wrapping it with contextlib), runs them (MaskErrors' runs a
runtime-checked Protocol ``isinstance``), and asks every extension for ``get_results``. With results
shared across subscribers (shared_events.py) that bookkeeping was a third of the server's CPU in a burst
to 100 watchers (issue 10), for hooks that do nothing to a result without errors.

:class:`StreamingExtensionsRunner` therefore skips the ``on_stream_result`` hooks for a plain result
without errors when every extension that has such a hook is known to touch errors only
(:data:`ERROR_ONLY_STREAM_HOOKS`); any other extension, or any result with errors, takes Strawberry's
path unchanged. ``get_results`` is asked only of the extensions that define it (the base returns ``{}``).

Its operation, parsing, validation and execution hooks are Strawberry's, found through a per-class cache
(graphql_schema/extension_hooks.py).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.extensions.context import StreamResultContextManager
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.utils.await_maybe import await_maybe

from graphql_schema.extension_hooks import CachedExecuting, CachedOperation, CachedParsing, CachedValidation
from graphql_schema.extensions import ErrorCodes

# Extensions whose on_stream_result only reads or rewrites `result.errors` (MaskErrors also notes that it
# ran, so that its on_operation does not mask the last result twice: with no errors that is a no-op).
ERROR_ONLY_STREAM_HOOKS: tuple[type[SchemaExtension], ...] = (MaskErrors, ErrorCodes)


class _NoHooks:
    """The context manager of a result that no hook needs to see."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NO_HOOKS = _NoHooks()


class StreamingExtensionsRunner(SchemaExtensionsRunner):
    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        self._skip_clean: bool | None = None
        self._with_results: list[SchemaExtension] | None = None

    def operation(self) -> CachedOperation:
        return CachedOperation(self.extensions)

    def validation(self) -> CachedValidation:
        return CachedValidation(self.extensions)

    def parsing(self) -> CachedParsing:
        return CachedParsing(self.extensions)

    def executing(self) -> CachedExecuting:
        return CachedExecuting(self.extensions)

    def on_stream_result(self, result: Any) -> StreamResultContextManager | _NoHooks:  # type: ignore[override]
        if type(result) is ExecutionResult and not result.errors and self._hooks_touch_errors_only():
            return _NO_HOOKS
        return super().on_stream_result(result)

    def no_extensions_results(self, ctx: ExecutionContext) -> bool:
        """True when :meth:`get_extensions_results` would return ``{}`` (no await needed to know it)."""
        return not self._extensions_with_results() and not ctx.extensions_results

    def _extensions_with_results(self) -> list[SchemaExtension]:
        if self._with_results is None:
            self._with_results = [
                extension
                for extension in self.extensions
                if type(extension).get_results is not SchemaExtension.get_results
            ]
        return self._with_results

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._extensions_with_results():
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data

    def _hooks_touch_errors_only(self) -> bool:
        if self._skip_clean is None:
            self._skip_clean = all(
                type(extension).on_stream_result is SchemaExtension.on_stream_result
                or isinstance(extension, ERROR_ONLY_STREAM_HOOKS)
                for extension in self.extensions
            )
        return self._skip_clean
