"""`claude-agent-api keys …`: operator commands for API keys, each one audited."""

from __future__ import annotations

import argparse
import sys

from api import audit
from api.auth import NewKey, create_key
from api.settings import Settings
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import utcnow
from persistence.repositories.tenants import ApiKeyRepository

OPERATOR = "operator:cli"


async def audit_key_created(db: Database, key: NewKey, *, actor: str = OPERATOR) -> None:
    async with db.session() as session:
        await audit.record(
            session,
            actor=actor,
            tenant_id=key.tenant_id,
            action="key.create",
            target_type="ApiKey",
            target_id=key.key_id,
        )
        await session.commit()


async def main(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.effective_database_url
    if settings.migrate_on_start:
        await upgrade_head(url)
    db = Database(url)
    try:
        if args.keys_command == "create":
            key = await create_key(db, tenant_name=args.tenant, name=args.name)
            await audit_key_created(db, key)
            print(key.secret)
            return 0
        if args.keys_command == "list":
            async with db.session() as session:
                rows = await ApiKeyRepository(session).list()
            for row, tenant in rows:
                state = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "active"
                print(f"{row.id}\t{tenant.name}\t{row.name or ''}\tcak_{row.prefix}_…\t{state}")
            return 0
        async with db.session() as session:
            repo = ApiKeyRepository(session)
            found = await repo.get(args.id)
            if found is None:
                print(f"no key with id {args.id}", file=sys.stderr)
                return 1
            if found.revoked_at is None:
                await repo.revoke(found, utcnow())
                await audit.record(
                    session,
                    actor=OPERATOR,
                    tenant_id=found.tenant_id,
                    action="key.revoke",
                    target_type="ApiKey",
                    target_id=found.id,
                )
            await session.commit()
        print(f"revoked {args.id}", file=sys.stderr)
        return 0
    finally:
        await db.dispose()
