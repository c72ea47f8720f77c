"""Headless Chromium for the browser tests; where Debian's chromium is missing they skip, saying why, and
fail in CI (tests/support/tools.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.browser import Chromium, Page
from tests.support.tools import require_tool


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    executable = require_tool(
        "chromium", "chromium-browser", why="scripts/bootstrap installs it when run as root with apt-get"
    )
    browser = Chromium(executable, tmp_path / "chromium-profile")
    try:
        yield await browser.start()
    finally:
        await browser.stop()


def only_this_server(page: Page, base_url: str) -> list[str]:
    """The URLs the page asked for outside the server under test (data: and about: are not requests)."""
    ws_base = base_url.replace("http://", "ws://", 1)
    return [
        request["url"]
        for request in page.requests
        if not request["url"].startswith((base_url + "/", ws_base + "/", "data:", "about:", "blob:"))
    ]
