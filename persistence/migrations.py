"""Running alembic from the service: `claude-agent-api migrate` and the embedded default's start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from persistence.database import create_engine

_ROOT = Path(__file__).resolve().parents[1]

# PostgreSQL replicas starting together must not migrate at the same time.
_MIGRATION_LOCK_KEY = 0x6361_6770  # "cagp"


def alembic_config(url: str) -> Config:
    candidates = [_ROOT / "alembic.ini", Path.cwd() / "alembic.ini"]
    ini = next((path for path in candidates if path.exists()), None)
    if ini is None:
        raise FileNotFoundError("alembic.ini not found next to the package or in the working directory")
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "alembic"))
    config.attributes["database_url"] = url
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_KEY})")
    try:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    finally:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_KEY})")


async def upgrade_head(url: str) -> None:
    """`alembic upgrade head` on url, serialised across replicas on PostgreSQL."""
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_upgrade, config)
            await connection.commit()
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def run_upgrade_head(url: str) -> None:
    asyncio.run(upgrade_head(url))
