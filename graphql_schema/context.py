"""The per-operation context: the server's services and the authenticated caller."""

from __future__ import annotations

import copy
from typing import TypeAlias

from strawberry.fastapi import BaseContext
from strawberry.types import Info as StrawberryInfo

from api.auth import Principal
from api.errors import Unauthenticated
from api.services import Services
from graphql_schema.dataloaders import Loaders


class Context(BaseContext):
    """Created per HTTP request, or once per WebSocket; each operation runs with a copy of it that has
    loaders of its own (`for_operation`, called by LoadersExtension)."""

    def __init__(self, services: Services, principal: Principal | None) -> None:
        super().__init__()
        self.services = services
        self.principal = principal
        self._loaders: Loaders | None = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.services.db, lambda: self.require_principal().tenant_id)
        return self._loaders

    def for_operation(self, *, cache: bool, shared_session: bool = False) -> Context:
        operation = copy.copy(self)
        operation._loaders = Loaders(
            self.services.db,
            lambda: operation.require_principal().tenant_id,
            cache=cache,
            shared_session=shared_session,
        )
        return operation

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("authentication required")
        return self.principal


Info: TypeAlias = StrawberryInfo[Context, None]
