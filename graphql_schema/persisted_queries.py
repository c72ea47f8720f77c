"""Automatic persisted queries: Apollo's APQ protocol, which urql's persistedExchange speaks too.

A client sends only `extensions.persistedQuery.sha256Hash` (over GET, so CDNs and browsers can cache it).
When this replica has not seen that hash, the answer is the error `PersistedQueryNotFound`, and the client
sends the query again with its hash; the server checks the hash, keeps the query and runs it. The store is
per replica and bounded: a miss only costs the client one retry, so replicas need not share it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

NOT_FOUND = "PersistedQueryNotFound"
# Documents longer than this are run but not kept: the token limit refuses far shorter ones anyway.
MAX_QUERY_CHARS = 50_000


class PersistedQueryStore:
    """sha256 hex of a document -> the document, least recently used dropped first."""

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, sha256_hash: str) -> str | None:
        query = self._items.get(sha256_hash)
        if query is not None:
            self._items.move_to_end(sha256_hash)
        return query

    def put(self, sha256_hash: str, query: str) -> None:
        if len(query) > MAX_QUERY_CHARS:
            return
        self._items[sha256_hash] = query
        self._items.move_to_end(sha256_hash)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def _error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


class PersistedQueries(SchemaExtension):
    """Fills in the query of a request that names a persisted one, or refuses it in the protocol's terms."""

    def __init__(self, *, store: PersistedQueryStore) -> None:
        self.store = store

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        spec: Any = (context.operation_extensions or {}).get("persistedQuery")
        if spec is not None:
            context.query = self._query(spec, context.query)
        yield

    def _query(self, spec: Any, query: str | None) -> str:
        if not isinstance(spec, dict) or spec.get("version") != 1:
            raise _error("PersistedQueryNotSupported: only version 1", "PERSISTED_QUERY_NOT_SUPPORTED")
        sha256_hash = spec.get("sha256Hash")
        if not isinstance(sha256_hash, str):
            raise _error("persistedQuery.sha256Hash must be a string", "BAD_USER_INPUT")
        if query is None:
            found = self.store.get(sha256_hash.lower())
            if found is None:
                raise _error(NOT_FOUND, "PERSISTED_QUERY_NOT_FOUND")
            return found
        if hashlib.sha256(query.encode()).hexdigest() != sha256_hash.lower():
            raise _error("provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH")
        self.store.put(sha256_hash.lower(), query)
        return query
