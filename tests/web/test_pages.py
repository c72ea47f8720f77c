"""The pages over plain HTTP: what they load, the policy that keeps the browser on this server, and the plain
explanation served where the npm assets are not installed."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.web import GRAPHIQL_ASSETS, render_graphiql, vendor_dir
from tests.conftest import Stack

HTML = {"Accept": "text/html"}


def _loaded(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_graphiql_and_the_console_load_only_this_servers_files(stack: Stack) -> None:
    if missing := [name for name in GRAPHIQL_ASSETS if not (vendor_dir(stack.settings) / name).is_file()]:
        pytest.fail(f"run scripts/web-assets: {missing} missing")
    async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
        for path in ("/graphql", "/console"):
            page = await http.get(path, headers=HTML)
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert "connect-src 'self'" in page.headers["content-security-policy"]
            urls = _loaded(page.text)
            assert urls
            for url in urls:
                assert url.startswith(("/static/", "data:")) or url in {"/console", "/graphql"}, url
                if url.startswith("/static/"):
                    asset = await http.get(url)
                    assert asset.status_code == 200, url
            assert "unpkg" not in page.text
        versions = (await http.get("/static/vendor/versions.json")).json()
        assert set(versions) == {"react", "react-dom", "graphiql", "graphql-ws"}
        # The API itself is as it was: a query over GET still answers JSON, with a key.
        answer = await http.get(
            "/graphql",
            params={"query": "{ __typename }"},
            headers={"Authorization": f"Bearer {stack.key}", "Accept": "application/json"},
        )
        assert answer.json() == {"data": {"__typename": "Query"}}


def test_without_the_assets_the_pages_say_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", web_assets_dir=tmp_path / "nothing-here")
    page = render_graphiql(settings)
    assert page.status_code == 503
    text = bytes(page.body).decode()
    assert "graphiql.min.js" in text
    assert "scripts/web-assets" in text
    assert "<script" not in text
    client = TestClient(create_app(settings))  # not entered: no lifespan, none needed for these
    console = client.get("/console", headers=HTML)
    assert console.status_code == 503
    assert "graphql-ws.min.js" in console.text
    assert "npm" in console.text
    assert client.get("/static/vendor/graphiql.min.js").status_code == 404
    assert client.get("/static/app/console.js").status_code == 200


def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "var", console=False))
    assert TestClient(app).get("/console", headers=HTML).status_code == 404
