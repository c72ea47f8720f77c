"""The pages the server serves itself: GraphiQL (GET /graphql) and the operator console (GET /console).

Their own scripts and styles live in api/web/app/ (served at /static/app/); the npm-built libraries they load
(React, GraphiQL, graphql-ws) are copied by scripts/web-assets into WEB_ASSETS_DIR (served at
/static/vendor/). Nothing is loaded from anywhere else: the Content-Security-Policy says so to the browser.
Where the libraries are missing the pages say so, and how to fix it, in plain HTML.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.settings import Settings

WEB_DIR = Path(__file__).resolve().parent
APP_DIR = WEB_DIR / "app"
DEFAULT_VENDOR_DIR = WEB_DIR / "vendor"

# What scripts/web-assets copies, and which page needs what.
GRAPHIQL_ASSETS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql.min.css",
    "graphql-ws.min.js",
)
CONSOLE_ASSETS = ("graphql-ws.min.js",)

# Only this server: scripts, styles, fonts and images from /static, requests and sockets to itself.
# GraphiQL's components set inline styles, hence 'unsafe-inline' for styles (never for scripts).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class _OptionalStaticFiles(StaticFiles):
    """404 rather than 500 while the folder does not exist (the assets are not installed yet)."""

    async def check_config(self) -> None:
        if self.directory is not None and await anyio.to_thread.run_sync(os.path.isdir, self.directory):
            await super().check_config()


def vendor_dir(settings: Settings) -> Path:
    return settings.web_assets_dir or DEFAULT_VENDOR_DIR


def missing_assets(settings: Settings, names: tuple[str, ...]) -> list[str]:
    folder = vendor_dir(settings)
    return [name for name in names if not (folder / name).is_file()]


def _missing_page(title: str, folder: Path, missing: list[str]) -> HTMLResponse:
    items = "".join(f"<li><code>{html.escape(name)}</code></li>" for name in missing)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}: assets missing</title></head>
<body>
<h1>{html.escape(title)} cannot load: its browser assets are not installed</h1>
<p>This page is served entirely by this server, from npm packages installed next to it, and these files are
missing from <code>{html.escape(str(folder))}</code>:</p>
<ul>{items}</ul>
<p>To fix it, install Node.js and npm (for example <code>sudo apt-get install npm</code>) and run
<code>scripts/web-assets</code> (or <code>scripts/bootstrap</code>) in the server's repository, or point
<code>WEB_ASSETS_DIR</code> at a folder holding them. No restart is needed.</p>
<p>The API itself works without them: <code>POST /graphql</code> with
<code>Authorization: Bearer &lt;key&gt;</code>.</p>
</body></html>
"""
    return HTMLResponse(body, status_code=503, headers=PAGE_HEADERS)


def render_page(settings: Settings, page: str, title: str, needs: tuple[str, ...]) -> HTMLResponse:
    """One of api/web/app's pages, or the plain explanation of what is missing (503)."""
    missing = missing_assets(settings, needs)
    if missing:
        return _missing_page(title, vendor_dir(settings), missing)
    return HTMLResponse((APP_DIR / page).read_text(encoding="utf-8"), headers=PAGE_HEADERS)


def render_graphiql(settings: Settings) -> HTMLResponse:
    return render_page(settings, "graphiql.html", "GraphiQL", GRAPHIQL_ASSETS)


def mount_web(app: FastAPI, settings: Settings) -> None:
    """/static/app and /static/vendor, and GET /console unless CONSOLE=false."""
    app.mount("/static/app", StaticFiles(directory=APP_DIR), name="web-app")
    # check_dir=False: a server whose assets are missing still starts; its pages say what to do.
    vendor = _OptionalStaticFiles(directory=vendor_dir(settings), check_dir=False)
    app.mount("/static/vendor", vendor, name="web-vendor")

    if settings.console:

        @app.get("/console", include_in_schema=False)
        async def console() -> HTMLResponse:
            return render_page(settings, "console.html", "The operator console", CONSOLE_ASSETS)
