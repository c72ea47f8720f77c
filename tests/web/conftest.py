"""Headless Chromium for the browser tests; they skip, saying why, where Debian's chromium is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.browser import Chromium, Page, chromium_path


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (scripts/bootstrap installs it when run as root with apt-get)")
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
