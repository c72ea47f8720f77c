"""The operator console at GET /console, in headless Chromium: a run started through the API shows up live,
its events stream, its permission request is approved by a click, and it completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run
from tests.support.browser import Page
from tests.web.conftest import only_this_server

pytestmark = pytest.mark.timeout(150)


def _text(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent"


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_a_run_is_watched_approved_and_completes_in_the_console(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    await page.goto(f"{stack.api.base_url}/console")
    await page.type("#api-key", stack.key)
    await page.click("#use-key")
    await page.wait_for(_text("#connection") + " === 'connected'", what="the console's socket")

    # Started through the API after the console opened: the live list (sessionChanges) shows it.
    client = stack.client()
    try:
        started = await start_ok(
            client, prompt="[scenario:write-file]", permissionMode="DEFAULT", title="console test"
        )
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        session_button = f"[data-session-id='{session_id}']"
        await page.wait_for(f"document.querySelector({json.dumps(session_button)})", what="the session")
        await page.click(session_button)

        # Its events stream in, up to the permission request, which waits for a person.
        approve = ".permission button.approve"
        await page.wait_for(
            "document.querySelector(\".event[data-kind='PermissionRequested']\")", what="PermissionRequested"
        )
        await page.wait_for(f"document.querySelector('{approve}')", what="the Approve button")
        assert "Write" in await page.evaluate(_text(".permission strong"))
        status = await client.execute("query($id: ID!) { run(id: $id) { status } }", {"id": run_id})
        assert status["run"]["status"] == "RUNNING"
        pending_shot = await page.screenshot(tmp_path / "console-pending.png")
        print(f"console screenshot (permission pending): {pending_shot}")
        await page.click(approve)

        # The decision is streamed back, the run completes, and the console shows its result and cost.
        await page.wait_for(
            "document.querySelector(\".event[data-kind='PermissionDecided']\")", what="PermissionDecided"
        )
        await page.wait_for(
            "document.querySelector(\".event[data-kind='ResultMessage']\")", what="the ResultMessage"
        )
        run_row = f"#runs-table tr[data-run-id='{run_id}']"
        await page.wait_for(_text(f"{run_row} .run-status") + " === 'COMPLETED'", what="COMPLETED")
        run = await wait_for_run(client, run_id)
        assert run["status"] == "COMPLETED"
        request = (
            await client.execute(
                "query($id: ID!) { permissionRequests(sessionId: $id) { id status } }", {"id": session_id}
            )
        )["permissionRequests"]
        assert [r["status"] for r in request] == ["ALLOWED"]
        assert (await page.evaluate(_text(f"{run_row} .run-cost"))).startswith("$")
        assert await page.evaluate(_text(".permission") + " || ''") == ""

        # Events arrive in order, each once.
        seqs = await page.evaluate(
            "[...document.querySelectorAll('.event')].map((e) => Number(e.dataset.seq))"
        )
        assert seqs == sorted(set(seqs)), seqs
        assert seqs[0] == 1, seqs

        # A rewind preview for the run's checkpoint names the file it wrote, and changes nothing.
        await page.click(f"{run_row} button.rewind-preview")
        files = await page.wait_for(
            "(() => { const l = [...document.querySelectorAll('#rewind-files li')];"
            " return l.length ? l.map((e) => e.textContent) : null; })()",
            what="the rewind preview",
        )
        assert files, files
        assert "Nothing was changed" in await page.evaluate(_text("#rewind-preview"))
    finally:
        await client.aclose()

    shot = await page.screenshot(tmp_path / "console.png")
    print(f"console screenshot (run completed): {shot}")
    assert only_this_server(page, stack.api.base_url) == []
    assert page.problems == []


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_a_run_waiting_for_a_decision_is_interrupted_from_the_console(stack: Stack, page: Page) -> None:
    client = stack.client()
    try:
        started = await start_ok(client, prompt="[scenario:write-file]", permissionMode="DEFAULT")
        session_id, run_id = started["session"]["id"], started["run"]["id"]
        await page.goto(f"{stack.api.base_url}/console")
        await page.type("#api-key", stack.key)
        await page.click("#use-key")
        # The session was there before the console opened: the initial `sessions` query lists it.
        await page.click(f"[data-session-id='{session_id}']")
        await page.wait_for("document.querySelector('.permission button.approve')", what="the request")
        await page.click(f"#runs-table tr[data-run-id='{run_id}'] button.interrupt")
        run_row = f"#runs-table tr[data-run-id='{run_id}']"
        await page.wait_for(_text(f"{run_row} .run-status") + " === 'INTERRUPTED'", what="INTERRUPTED")
        assert (await wait_for_run(client, run_id))["status"] == "INTERRUPTED"
        await page.wait_for("!document.querySelector('.permission')", what="the request to go")
    finally:
        await client.aclose()
    assert only_this_server(page, stack.api.base_url) == []
    assert page.problems == []
