"""What schemathesis needs from us, loaded through SCHEMATHESIS_HOOKS by test_fuzzing.py: strategies
for the schema's custom scalars, and the two checks the test runs.

schemathesis's own `not_a_server_error` also fails any GraphQL `errors` entry, which is how this API
reports a bad query argument (code VALIDATION_ERROR); the contract is narrower: no HTTP 5xx, and no error
masked as "Unexpected error." (every expected failure is typed).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import graphql
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

MASKED = "Unexpected error."

_NAMES = st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,12}", fullmatch=True)
_TEXT = st.text(max_size=40)
_JSON_LEAVES = st.one_of(
    _TEXT.map(nodes.String),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    st.booleans().map(nodes.Boolean),
    st.just(nodes.Null),
)


def _object(fields: dict[str, graphql.ValueNode]) -> graphql.ValueNode:
    return nodes.Object(
        [graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v) for k, v in fields.items()]
    )


_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(nodes.List),
        st.dictionaries(_NAMES, inner, max_size=4).map(_object),
    ),
    max_leaves=12,
)

schemathesis.graphql.scalar("JSON", _JSON)
schemathesis.graphql.scalar(
    "DateTime",
    st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda value: nodes.String(value.isoformat())),
        _TEXT.map(nodes.String),
    ),
)

schemathesis.graphql.scalar(
    "Date",
    st.one_of(
        st.dates().map(lambda value: nodes.String(value.isoformat())),
        _TEXT.map(nodes.String),
    ),
)


@schemathesis.check
def no_http_5xx(ctx: Any, response: Any, case: Any) -> None:
    """No input makes the server answer 5xx."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")


@schemathesis.check
def no_masked_errors(ctx: Any, response: Any, case: Any) -> None:
    """Bad input gets a typed error; a masked "Unexpected error." is a failure the server hid."""
    if MASKED in response.text:
        raise AssertionError(f"masked error in the response: {response.text[:500]}")
