"""Which database errors mean "unreachable for now" (retry quietly) and which are bugs or bad data."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from persistence.database import is_unavailable


class DriverError(Exception):
    """What SQLAlchemy's asyncpg adapter raises, with asyncpg's own error as its cause."""


def wrapped(cause: BaseException) -> sa_exc.DBAPIError:
    orig = DriverError(str(cause))
    orig.__cause__ = cause
    return sa_exc.DBAPIError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")),
        wrapped(asyncpg.AdminShutdownError("terminating connection due to administrator command")),
        sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
    ],
)
def test_an_unreachable_database_is_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence")),
        sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        ValueError("a bug"),
    ],
)
def test_bad_data_and_bugs_are_not(error: BaseException) -> None:
    assert not is_unavailable(error)
