"""The engine's own pieces: JSON columns read as the standard library reads them, and SQLite's one-trip
cursor answering what the stock adapter answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from persistence.database import Database, load_json

TRICKY = [
    '{"a": 1, "b": [1.5, -0.0, 1e2, "x"], "c": null, "d": true}',
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    '{"id": "toolu_1234567890123456789012"}',
    "123456789012345678901234567890",
    "NaN",
    "[Infinity, -Infinity]",
    "1e400",
    '"\\ud800"',
    '"\\u0000 \\u00e9 \\ud83d\\ude00"',
    '{"a": 1, "a": 2}',
]


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_json_columns_read_as_the_standard_library_reads_them(text: str) -> None:
    expected = json.loads(text)
    assert repr(load_json(text)) == repr(expected)
    assert repr(load_json(text.encode())) == repr(expected)


async def test_sqlite_statements_answer_rows_counts_ids_and_errors(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, j JSON)"))
            many = await conn.execute(sa.text("INSERT INTO t (b) VALUES (:b)"), [{"b": "x"}, {"b": "y"}])
            assert many.rowcount == 2
            one = await conn.execute(sa.text("INSERT INTO t (b) VALUES (:b)"), {"b": "z"})
            assert (one.lastrowid, one.rowcount) == (3, 1)
            updated = await conn.execute(sa.text("UPDATE t SET b = 'w' WHERE a > 1"))
            assert updated.rowcount == 2
            rows = (await conn.execute(sa.text("SELECT a, b FROM t ORDER BY a"))).all()
            assert [tuple(row) for row in rows] == [(1, "x"), (2, "w"), (3, "w")]
            assert (await conn.execute(sa.text("SELECT a FROM t WHERE a > 9"))).first() is None
            with pytest.raises(sa.exc.OperationalError, match="no such table"):
                await conn.execute(sa.text("SELECT * FROM missing"))
        async with db.engine.connect() as conn:
            # What the transaction above wrote was committed, and a new one reads it.
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 3
            # A write not committed is rolled back (a read alone leaves no transaction to roll back).
            await conn.execute(sa.text("INSERT INTO t (b) VALUES ('v')"))
            await conn.rollback()
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 3
    finally:
        await db.dispose()
