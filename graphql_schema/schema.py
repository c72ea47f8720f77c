"""The schema, its protective extensions, and the SDL export."""

from __future__ import annotations

from collections.abc import Callable

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
from strawberry.tools import merge_types

from api.errors import ServiceError
from api.settings import Settings
from graphql_schema.live.mutations import LiveMutations
from graphql_schema.live.queries import LiveQueries
from graphql_schema.mutations import Mutation as RunMutations
from graphql_schema.permissions.mutations import PermissionMutations
from graphql_schema.permissions.queries import PermissionQueries
from graphql_schema.queries import Query as CoreQueries
from graphql_schema.subscriptions import Subscription

# Each domain owns its operations; the root types only assemble them.
Query = merge_types("Query", (CoreQueries, PermissionQueries, LiveQueries))
Mutation = merge_types("Mutation", (RunMutations, PermissionMutations, LiveMutations))


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected exceptions only; parse, validation, limit and service errors speak for themselves."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    return not isinstance(original, ServiceError)


def build_schema(settings: Settings | None = None) -> Schema:
    settings = settings or Settings()
    # Factories, so each operation gets fresh extension state.
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
    ]
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(disable_field_suggestions=not settings.graphiql),
        extensions=extensions,
    )


def export_sdl() -> str:
    return print_schema(build_schema()) + "\n"
