"""GraphQL over HTTP for tests: ``execute`` fails the test on any top-level error, like a client would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx
import pytest


class GraphQLHttpClient:
    """``POST /graphql`` with ``Authorization: Bearer <token>`` (no header when ``token`` is None)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        # trust_env=False: loopback only, whatever proxy the environment names.
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, trust_env=False)

    async def execute_raw(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """The response as it came, whatever its status or body."""
        body: dict[str, Any] = {"query": query}
        if extensions is not None:
            body["extensions"] = dict(extensions)
        if variables is not None:
            body["variables"] = dict(variables)
        if operation_name is not None:
            body["operationName"] = operation_name
        return await self.http.post("/graphql", json=body, headers=dict(headers or {}))

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The response's ``data``; fails the test on a non-200 status or any top-level ``errors``."""
        response = await self.execute_raw(query, variables, operation_name, headers=headers)
        if response.status_code != 200:
            pytest.fail(f"POST /graphql answered {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            pytest.fail(f"GraphQL errors: {json.dumps(body['errors'], indent=2)}")
        data: dict[str, Any] = body["data"]
        return data

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
