"""Answers for the CLI's structured-output side queries (e.g. the session title)."""

from __future__ import annotations

from typing import Any

# Plausible values for fields the 2.1.331 CLI asks for; anything else gets a type-correct placeholder.
_KNOWN_FIELDS: dict[str, Any] = {"title": "Scripted session"}


def example_for_schema(schema: dict[str, Any]) -> Any:
    """A small value that satisfies a JSON schema (objects, arrays, enums, scalars)."""
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {
            name: _KNOWN_FIELDS.get(name, example_for_schema(props.get(name) or {}))
            for name in required
            if isinstance(name, str)
        }
    if kind == "array":
        items = schema.get("items")
        min_items = schema.get("minItems") or 0
        return [example_for_schema(items if isinstance(items, dict) else {}) for _ in range(min_items)]
    if kind in ("integer", "number"):
        minimum = schema.get("minimum")
        return minimum if isinstance(minimum, int | float) else 0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "scripted"
