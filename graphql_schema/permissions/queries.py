"""Reading permission requests: what waits for a decision, and what was decided."""

from __future__ import annotations

from typing import Annotated

import strawberry

from graphql_schema.context import Info
from graphql_schema.permissions.types import PermissionRequest, PermissionRequestStatus


@strawberry.type
class PermissionQueries:
    @strawberry.field(
        description="The caller's permission requests, oldest first (at most 500): all of them, one "
        "session's, or those in one status. Another tenant's session id gives an empty list."
    )
    async def permission_requests(
        self,
        info: Info,
        session_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only this session's requests.")
        ] = None,
        status: Annotated[
            PermissionRequestStatus | None,
            strawberry.argument(description="Only requests in this status, e.g. PENDING."),
        ] = None,
    ) -> list[PermissionRequest]:
        principal = info.context.require_principal()
        rows = await info.context.services.permission_control.list(
            principal,
            session_id=str(session_id) if session_id is not None else None,
            status=status.name if status is not None else None,
        )
        return [PermissionRequest.from_model(row) for row in rows]
