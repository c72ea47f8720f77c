"""Opaque cursors for Relay connections: base64 of a small JSON array."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from api.errors import ValidationFailed


def encode(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode()


def decode(cursor: str, arity: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValidationFailed("not a cursor of this connection", field="after") from exc
    if not isinstance(parts, list) or len(parts) != arity:
        raise ValidationFailed("not a cursor of this connection", field="after")
    return parts


def decode_time_id(cursor: str) -> tuple[datetime, str]:
    stamp, identifier = decode(cursor, 2)
    try:
        return datetime.fromisoformat(str(stamp)), str(identifier)
    except ValueError as exc:
        raise ValidationFailed("not a cursor of this connection", field="after") from exc


def page_size(first: int | None, *, default: int, maximum: int) -> int:
    if first is None:
        return default
    if not 1 <= first <= maximum:
        raise ValidationFailed(f"first must be between 1 and {maximum}", field="first")
    return first
