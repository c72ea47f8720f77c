"""Checks at the edge on what clients send: text PostgreSQL can store, JSON of bounded depth.

A NUL character is valid JSON and valid GraphQL but PostgreSQL cannot store it in text or jsonb, and a
lone surrogate (possible in JSON escapes and in Python's own JSON) cannot be encoded as UTF-8 at all:
both used to reach the database and come back as a masked "Unexpected error." with a traceback. Deeply
nested JSON exhausts the recursion of whatever reads it next. So every String, ID and JSON value is
checked here, where it enters, and refused with a validation error that names the problem.
"""

from __future__ import annotations

from typing import Any

from api.errors import ValidationFailed

MAX_JSON_DEPTH = 64


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not valid Unicode"
    return None


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``value`` (parsed JSON) is refused, or None. Iterative: its depth is what is in question."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return f"a string {problem}"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return f"is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = text_problem(key) if isinstance(key, str) else None
                    if problem is not None:
                        return f"a key {problem}"
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


def checked_text(value: str, what: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValidationFailed(f"{what} {problem}")
    return value


def checked_json(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        raise ValidationFailed(f"JSON value {problem}")
    return value
