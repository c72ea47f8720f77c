"""The `claude-agent-api` command: serve, migrate, keys, doctor and export-schema."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence

from api.doctor import cli_command, database_env, missing_database
from api.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.logging import configure_logging
    from api.web import GRAPHIQL_ASSETS, missing_assets
    from api.ws_protocol import protocol_class

    configure_logging(settings.log_format, settings.log_level)
    if args.scripted_model:
        settings.scripted_model = True
    url = settings.effective_database_url
    dev_key = asyncio.run(_prepare_embedded(settings)) if settings.is_embedded else None
    base = f"http://{args.host}:{args.port}"
    print(f"Claude Agent GraphQL API on {base}", file=sys.stderr)
    print(
        f"  GraphiQL:  {base}/graphql   (WebSocket subscriptions: ws://{args.host}:{args.port}/graphql)",
        file=sys.stderr,
    )
    if settings.console:
        print(f"  console:   {base}/console", file=sys.stderr)
    missing = missing_assets(settings, GRAPHIQL_ASSETS)
    if missing and (settings.graphiql or settings.console):
        print(
            f"  warning:   GraphiQL and the console lack their browser assets ({', '.join(missing)});"
            " run scripts/web-assets (needs npm)",
            file=sys.stderr,
        )
    print(f"  database:  {url.split('@')[-1]}", file=sys.stderr)
    print(f"  fan-out:   {'Redis' if settings.redis_url else 'in-process'}", file=sys.stderr)
    if settings.scripted_model:
        print("  model:     the built-in scripted model (no Anthropic key needed)", file=sys.stderr)
    print(f"  sandbox:   {_sandbox_line(settings)}", file=sys.stderr)
    create_key = f"{database_env(settings)}{cli_command()} keys create --tenant NAME"
    if not database_env(settings):
        create_key += "   (with the server's DATABASE_URL)"
    print(f"  keys:      {create_key}", file=sys.stderr)
    if dev_key:
        print(
            "\nA development API key was created (shown once; send it as 'Authorization: Bearer <key>',\n"
            "or enter it in the key form of GraphiQL or the console):\n\n"
            f"  {dev_key}\n",
            file=sys.stderr,
        )
    app = create_app(settings)
    # The app's lifespan freezes the heap startup built (api/app.py); a young generation ten times the
    # default also makes full collections (which walk the shared-event caches) rare: in a burst to 100
    # watchers they paused the loop for 150-450 ms (issue 10).
    gc.set_threshold(7000, 10, 10)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        ws_max_size=settings.ws_max_message_bytes,
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_timeout_seconds,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws=protocol_class(shared_compression=settings.ws_shared_compression),
        timeout_graceful_shutdown=10,
        lifespan="on",
        loop=_loop(),
    )
    return 0


def _loop() -> str:
    """uvloop with CPython's process start (api/event_loop.py), where uvloop is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "auto"
    return "api.event_loop:AgentLoop"


def _sandbox_line(settings: Settings) -> str:
    if settings.sandbox == "off":
        return "OFF (SANDBOX=off): agents run unconfined, as this server's user; never for untrusted callers"
    from api.sandbox.launcher import AgentLauncher

    problem = asyncio.run(AgentLauncher(settings).check())
    if problem is None:
        return "bubblewrap: every agent runs confined to its own session (docs/security.md)"
    return f"UNAVAILABLE, runs are refused: {problem}"


async def _prepare_embedded(settings: Settings) -> str | None:
    """Migrate the embedded database and, when it has no key at all, make a development key."""
    from api.auth import create_key
    from api.keys import audit_key_created
    from persistence.database import Database
    from persistence.migrations import upgrade_head
    from persistence.repositories.tenants import ApiKeyRepository

    url = settings.effective_database_url
    await upgrade_head(url)
    db = Database(url)
    try:
        async with db.session() as session:
            if await ApiKeyRepository(session).count() > 0:
                return None
        key = await create_key(db, tenant_name="default", name="development key")
        await audit_key_created(db, key, actor="system:first-start")
        return key.secret
    finally:
        await db.dispose()


def _migrate(settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    from persistence.migrations import run_upgrade_head

    url = settings.effective_database_url
    if settings.sqlite_file is not None:
        settings.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    run_upgrade_head(url)
    shown = make_url(url).render_as_string(hide_password=True)
    print(f"{shown} is at the latest migration", file=sys.stderr)
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from api import keys

    missing = missing_database(settings)
    if missing is not None:
        # Never a new empty database in whatever directory this was run from.
        problem, fix = missing
        print(f"{problem}.\nfix: {fix}", file=sys.stderr)
        return 2
    return asyncio.run(keys.main(args, settings))


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from api import doctor

    return asyncio.run(doctor.run(settings, scripted_model=args.scripted_model))


def _scripted_model(args: argparse.Namespace) -> int:
    """The stand-in model alone, for a frontend team or a CLI of one's own (no API server, no database)."""
    from api.scripted_model.__main__ import serve_until_signalled

    asyncio.run(serve_until_signalled(args.host, args.port))
    return 0


def _export_schema() -> int:
    from graphql_schema.schema import export_sdl

    sys.stdout.write(export_sdl())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-agent-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--scripted-model",
        action="store_true",
        help="run against the built-in scripted model (no Anthropic key)",
    )

    scripted = commands.add_parser(
        "scripted-model",
        help="run the scripted stand-in for the Messages API alone; prints how to point a CLI at it",
    )
    scripted.add_argument("--host", default="127.0.0.1", help="a loopback address")
    scripted.add_argument("--port", type=int, default=8788, help="0 picks a free port")

    commands.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    commands.add_parser("export-schema", help="print the GraphQL SDL")

    doctor = commands.add_parser(
        "doctor", help="check the agent CLI, sandbox, database, Redis, DATA_DIR and model endpoint"
    )
    doctor.add_argument(
        "--scripted-model", action="store_true", help="the server runs with --scripted-model: skip the model"
    )

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it, alone, on stdout")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name")
    key_commands.add_parser("list", help="list keys (never the secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export-schema":
        return _export_schema()
    if args.command == "scripted-model":
        return _scripted_model(args)
    settings = Settings()
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "doctor":
        return _doctor(args, settings)
    return _keys(args, settings)


if __name__ == "__main__":
    sys.exit(main())
