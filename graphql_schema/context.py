"""The per-operation context: the server's services and the authenticated caller."""

from __future__ import annotations

from typing import TypeAlias

from strawberry.fastapi import BaseContext
from strawberry.types import Info as StrawberryInfo

from api.auth import Principal
from api.errors import Unauthenticated
from api.services import Services


class Context(BaseContext):
    """Created per HTTP request, or once per WebSocket (so it holds no database session or loaders)."""

    def __init__(self, services: Services, principal: Principal | None) -> None:
        super().__init__()
        self.services = services
        self.principal = principal

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("authentication required")
        return self.principal


Info: TypeAlias = StrawberryInfo[Context, None]
