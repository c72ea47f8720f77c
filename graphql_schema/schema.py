"""The schema, its protective extensions, and the SDL export."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from graphql import GraphQLError
from strawberry import Schema
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.printer import print_schema
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.utils.logging import StrawberryLogger

from api.errors import ServiceError
from api.settings import Settings
from graphql_schema.extensions import ErrorCodes, InputChecks, SubscriptionsOverWebSocket
from graphql_schema.mutations import Mutation
from graphql_schema.queries import Query
from graphql_schema.subscriptions import Subscription

log = structlog.get_logger(__name__)


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected exceptions only; parse, validation, limit and service errors speak for themselves."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    return not isinstance(original, ServiceError)


class AgentSchema(Schema):
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


def build_schema(settings: Settings | None = None) -> Schema:
    settings = settings or Settings()
    # Factories, so each operation gets fresh extension state.
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
        ErrorCodes,
        InputChecks,
        SubscriptionsOverWebSocket,
    ]
    return AgentSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(disable_field_suggestions=not settings.graphiql),
        extensions=extensions,
    )


def export_sdl() -> str:
    return print_schema(build_schema()) + "\n"
