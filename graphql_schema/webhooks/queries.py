"""Read side of webhooks."""

from __future__ import annotations

import strawberry

from graphql_schema.context import Info
from graphql_schema.webhooks.types import Webhook


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="The caller's tenant's webhooks, oldest first.")
    async def webhooks(self, info: Info) -> list[Webhook]:
        principal = info.context.require_principal()
        rows = await info.context.services.webhooks.list(principal)
        return [Webhook.from_model(row) for row in rows]
