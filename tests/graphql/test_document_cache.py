"""A document seen before is neither parsed nor validated again, and gets the same verdict."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema

from api.settings import Settings
from graphql_schema.schema import build_schema

DEEP = "{ " + "sessions { edges { node { " * 5 + "id" + " } } }" * 5 + " }"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()
    parse, validate = strawberry_schema.parse, strawberry_schema.validate_document

    def counting_parse(*args: Any, **kwargs: Any) -> Any:
        counted["parse"] += 1
        return parse(*args, **kwargs)

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        counted["validate"] += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "parse", counting_parse)
    monkeypatch.setattr(strawberry_schema, "validate_document", counting_validate)
    return counted


async def test_a_valid_document_is_parsed_and_validated_once(calls: Counter[str]) -> None:
    schema = build_schema(Settings(graphql_document_cache_size=10))
    results = [await schema.execute("{ __typename }") for _ in range(3)]
    assert [r.data for r in results] == [{"__typename": "Query"}] * 3
    assert calls == {"parse": 1, "validate": 1}


async def test_an_invalid_document_keeps_its_errors_and_limits_still_apply(calls: Counter[str]) -> None:
    schema = build_schema(Settings(graphql_document_cache_size=10, max_query_depth=4))
    unknown = [await schema.execute("{ nope }") for _ in range(2)]
    deep = [await schema.execute(DEEP) for _ in range(2)]
    assert [[e.message for e in r.errors or []] for r in unknown] == [
        ["Cannot query field 'nope' on type 'Query'."]
    ] * 2
    assert all(r.errors and "exceeds maximum operation depth" in r.errors[0].message for r in deep)
    assert calls == {"parse": 2, "validate": 2}


async def test_size_zero_keeps_nothing(calls: Counter[str]) -> None:
    schema = build_schema(Settings(graphql_document_cache_size=0))
    for _ in range(3):
        await schema.execute("{ __typename }")
    assert calls == {"parse": 3, "validate": 3}


async def test_the_least_recently_used_document_is_dropped(calls: Counter[str]) -> None:
    schema = build_schema(Settings(graphql_document_cache_size=2))
    for document in ["{ __typename }", "{ a: __typename }", "{ __typename }", "{ b: __typename }"]:
        await schema.execute(document)
    await schema.execute("{ __typename }")  # kept: used more recently than "a"
    await schema.execute("{ a: __typename }")  # dropped when "b" came
    assert calls == {"parse": 4, "validate": 4}


async def test_the_limiters_rules_made_once_apply_to_every_operation() -> None:
    """The depth and alias limiters' rule classes are made once per schema (schema._rules_made_once);
    without the cache, every operation is still validated against them."""
    schema = build_schema(Settings(graphql_document_cache_size=0, max_query_depth=4, max_aliases=2))
    aliased = "{ a: __typename b: __typename c: __typename }"
    for _ in range(2):
        deep, many, fine = (
            await schema.execute(DEEP),
            await schema.execute(aliased),
            await schema.execute("{ a: __typename }"),
        )
        assert deep.errors
        assert "exceeds maximum operation depth" in deep.errors[0].message
        assert many.errors
        assert "aliases" in many.errors[0].message
        assert fine.errors is None
        assert fine.data == {"a": "Query"}
