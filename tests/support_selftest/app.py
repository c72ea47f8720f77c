"""A tiny Strawberry app for the support self-tests: a query, a counting subscription, a token check."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
import uvicorn
from fastapi import FastAPI
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

GOOD_TOKEN = "good-token"


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int, delay: float = 0.0) -> AsyncGenerator[int, None]:
        for i in range(to):
            if delay:
                await asyncio.sleep(delay)
            yield i


schema = strawberry.Schema(query=Query, subscription=Subscription)


class Router(GraphQLRouter[Any, None]):
    """Accepts only ``Authorization: Bearer good-token`` in ``connection_init``."""

    async def on_ws_connect(self, context: Any) -> dict[str, object] | None:
        params = context.get("connection_params") if isinstance(context, dict) else context.connection_params
        if not isinstance(params, dict) or params.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            raise ConnectionRejectionError()
        return {"welcome": True}


def create_app() -> FastAPI:
    app = FastAPI()
    app.include_router(
        Router(schema, subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,)), prefix="/graphql"
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    """``python -m tests.support_selftest.app serve --host H --port P [--fail]``: stands in for api.cli."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fail", action="store_true", help="exit at once, as a broken server would")
    args = parser.parse_args()
    if args.fail:
        print("refusing to start: --fail given")
        raise SystemExit(3)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
