"""The schema, its protective extensions, and the SDL export."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import strawberry
import structlog
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry import Schema
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.printer import print_schema
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.logging import StrawberryLogger

from api.errors import ServiceError
from api.request_ids import current_request_id
from api.settings import Settings
from graphql_schema.checkpoints.mutations import CheckpointMutations
from graphql_schema.dataloaders import LoadersExtension
from graphql_schema.document_cache import DocumentCache, DocumentStore
from graphql_schema.extensions import ErrorCodes, InputChecks
from graphql_schema.fast_executor import FastLeafExecutor
from graphql_schema.fast_paths import apply_fast_paths
from graphql_schema.live.mutations import LiveMutations
from graphql_schema.live.queries import LiveQueries
from graphql_schema.live.shared_events import SharedEventExecutor
from graphql_schema.live.stream_hooks import StreamingExtensionsRunner
from graphql_schema.mutations import Mutation as RunMutations
from graphql_schema.permissions.mutations import PermissionMutations
from graphql_schema.permissions.queries import PermissionQueries
from graphql_schema.persisted_queries import PersistedQueries, PersistedQueryStore
from graphql_schema.queries import Query as CoreQueries
from graphql_schema.sessions.mutations import SessionMutations
from graphql_schema.subscriptions import Subscription
from graphql_schema.usage.queries import UsageQueries
from graphql_schema.webhooks.mutations import WebhookMutation
from graphql_schema.webhooks.queries import WebhookQuery


# Each domain module owns its operations; the root types only assemble them.
@strawberry.type(
    description="Everything a caller can read: sessions, runs, events, audit, permission requests, the live "
    "agent's context, webhooks, usage and budgets."
)
class Query(CoreQueries, PermissionQueries, LiveQueries, WebhookQuery, UsageQueries):
    pass


@strawberry.type(
    description="Everything a caller can do: start, continue and interrupt runs; decide permission "
    "requests and answer questions; change a live agent's model and mode; rewind files and fork, "
    "rename, tag, archive and delete sessions; register webhooks. Every action is audited."
)
class Mutation(
    RunMutations, PermissionMutations, LiveMutations, CheckpointMutations, SessionMutations, WebhookMutation
):
    pass


log = structlog.get_logger(__name__)


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected exceptions only; parse, validation, limit and service errors speak for themselves."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    return not isinstance(original, ServiceError)


class MaskWithRequestId(MaskErrors):
    """ "Unexpected error.", with the request id its traceback is logged under (`extensions.requestId`)."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        request_id = current_request_id()
        if request_id is not None:
            masked.extensions = {**(masked.extensions or {}), "requestId": request_id}
        return masked

    def _process_result(self, result: object) -> None:
        # Strawberry's first question is a runtime-checked Protocol's isinstance (is there an `errors`
        # attribute?), a few per cent of executing a small mutation; a result without errors needs no
        # more than this look, one with errors goes Strawberry's way.
        if getattr(result, "errors", None):
            super()._process_result(result)


class ApiSchema(Schema):
    """Subscriptions are served over the WebSocket only.

    Strawberry lets HTTP (GET and POST) ask for a subscription and would then call its resolver as if it were
    a query, which fails as an unexpected error. `execute` (plain HTTP; the WebSocket uses `stream`) refuses
    the operation instead, so the client gets a 400 that names the problem.
    """

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # Cheap per-event hooks for subscription results without errors (graphql_schema/live/stream_hooks.py).
        return StreamingExtensionsRunner(execution_context=execution_context, extensions=extensions)

    async def _handle_execution_result(
        self,
        context: ExecutionContext,
        result: Any,
        extensions_runner: SchemaExtensionsRunner,
        *,
        skip_process_errors: bool = False,
    ) -> ExecutionResult:
        # Strawberry's conversion, without its awaits for a plain result without errors when no extension
        # adds results: it runs per event and subscriber (issue 10's burst to 100 watchers).
        if (
            type(result) is GraphQLExecutionResult
            and not result.errors
            and isinstance(extensions_runner, StreamingExtensionsRunner)
            and extensions_runner.no_extensions_results(context)
        ):
            converted = ExecutionResult(data=result.data, errors=result.errors)
            converted.extensions = {}
            context.result = converted
            return converted
        return await super()._handle_execution_result(
            context, result, extensions_runner, skip_process_errors=skip_process_errors
        )

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        allowed = set(allowed_operation_types or (OperationType.QUERY, OperationType.MUTATION))
        return await super().execute(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            allowed_operation_types=allowed - {OperationType.SUBSCRIPTION},
            operation_extensions=operation_extensions,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Unexpected errors are logged with their traceback; what the client caused (syntax, validation,
        limits, service errors) is logged at info, one line each, without one."""
        for error in errors:
            if _should_mask(error):
                StrawberryLogger.error(error, execution_context)
            else:
                log.info("graphql.client_error", message=error.message[:500], path=error.path)


def _rules_made_once(factory: Callable[[], AddValidationRules]) -> Callable[[], SchemaExtension]:
    """The limiter `factory` makes, with the validation rule class it builds made once per schema: each
    QueryDepthLimiter and MaxAliasesLimiter defines a new rule class when constructed, once per request,
    which only the cyclic collector frees. Each operation still gets an extension of its own."""
    built = factory()
    rules, limiter = built.validation_rules, type(built)

    def make() -> SchemaExtension:
        extension = limiter.__new__(limiter)
        AddValidationRules.__init__(extension, rules)
        return extension

    return make


def build_schema(settings: Settings | None = None) -> Schema:
    settings = settings or Settings()
    persisted = PersistedQueryStore()
    # Factories, so each operation gets fresh extension state. PersistedQueries first: it supplies the query.
    extensions: list[Callable[[], SchemaExtension]] = [lambda: PersistedQueries(store=persisted)]
    if settings.graphql_document_cache_size:
        documents = DocumentStore(settings.graphql_document_cache_size)
        extensions.append(lambda: DocumentCache(store=documents))
    extensions += [
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        _rules_made_once(lambda: QueryDepthLimiter(max_depth=settings.max_query_depth)),
        _rules_made_once(lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases)),
        LoadersExtension,
        lambda: MaskWithRequestId(should_mask_error=_should_mask, error_message="Unexpected error."),
        ErrorCodes,
        InputChecks,
    ]
    schema = ApiSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(disable_field_suggestions=not settings.graphiql),
        extensions=extensions,
        # Subscription events executed once per document and event, not once per subscriber.
        execution_context_class=(
            SharedEventExecutor if settings.shared_subscription_results else FastLeafExecutor
        ),
    )
    apply_fast_paths(schema)
    return schema


def export_sdl() -> str:
    return print_schema(build_schema()) + "\n"
