"""GraphiQL at GET /graphql, served entirely by the server: in headless Chromium, with no network but it."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import Stack
from tests.documents import start_ok
from tests.support.browser import Page
from tests.web.conftest import only_this_server

pytestmark = pytest.mark.timeout(120)

QUERY = "query Recent { sessions(first: 3) { edges { node { id } } } }"


def _posts(page: Page) -> list[str]:
    return [request["postData"] or "" for request in page.requests if request["method"] == "POST"]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_the_key_comes_before_introspection_and_then_a_query_runs(stack: Stack, page: Page) -> None:
    await page.goto(f"{stack.api.base_url}/graphql")
    await page.wait_for("document.querySelector('#key-form')", what="the key form")
    # Nothing asked of the API yet: no introspection, no socket, and GraphiQL not mounted.
    assert _posts(page) == []
    assert not [request for request in page.requests if request["method"] == "WEBSOCKET"]
    assert not await page.evaluate("Boolean(document.querySelector('.graphiql-container'))")

    await page.type("#api-key", stack.key)
    await page.click("#use-key")
    await page.wait_for("document.querySelector('.graphiql-container .graphiql-query-editor .CodeMirror')")
    await page.wait_for(
        "[...document.querySelectorAll('button')]"
        ".some((b) => b.getAttribute('aria-label') === 'Show Documentation Explorer')",
        what="GraphiQL's toolbar",
    )
    posts = _posts(page)
    assert "__typename" in posts[0]  # the key check, then the introspection with the key
    introspections = [body for body in _posts(page) if "IntrospectionQuery" in body or "__schema" in body]
    assert introspections, _posts(page)

    editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
    await page.evaluate(f"{editor}.setValue({json.dumps(QUERY)})")
    await asyncio.sleep(0.5)  # GraphiQL reads the operation's name from the editor after a short debounce
    await page.click(".graphiql-execute-button")
    response = await page.wait_for(
        "(() => { const v = document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue();"
        " return v.includes('edges') ? v : null; })()",
        what="the query's result",
    )
    assert json.loads(response)["data"]["sessions"]["edges"] is not None

    # The key stays in this tab unless asked; nothing but the server was contacted.
    assert await page.evaluate("sessionStorage.getItem('claude-agent-api.key')") == stack.key
    assert await page.evaluate("localStorage.getItem('claude-agent-api.key')") is None
    assert only_this_server(page, stack.api.base_url) == []
    assert page.problems == []


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_a_wrong_key_is_refused_at_the_form_and_nothing_is_stored(stack: Stack, page: Page) -> None:
    await page.goto(f"{stack.api.base_url}/graphql")
    await page.type("#api-key", "cak_wrong_key")
    await page.click("#use-key")
    error = await page.wait_for(
        "(() => { const t = document.querySelector('#key-error').textContent;"
        " return t.includes('refused') ? t : null; })()"
    )
    assert "refused" in error
    assert not await page.evaluate("Boolean(document.querySelector('.graphiql-container'))")
    assert await page.evaluate("sessionStorage.length + localStorage.length") == 0


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_remember_keeps_the_key_in_local_storage_until_forget(stack: Stack, page: Page) -> None:
    await page.goto(f"{stack.api.base_url}/graphql")
    await page.type("#api-key", stack.key)
    await page.click("#remember-key")
    await page.click("#use-key")
    await page.wait_for("document.querySelector('.graphiql-container')", what="GraphiQL")
    assert await page.evaluate("localStorage.getItem('claude-agent-api.key')") == stack.key
    assert await page.evaluate("sessionStorage.getItem('claude-agent-api.key')") is None
    # The console on the same origin finds it: no second form.
    await page.goto(f"{stack.api.base_url}/console")
    connected = "document.querySelector('#connection').textContent === 'connected'"
    await page.wait_for(connected, what="the socket")
    assert not await page.evaluate("Boolean(document.querySelector('#key-form'))")
    await page.click("#forget-key")
    await page.wait_for("document.querySelector('#key-form')", what="the key form again")
    # GraphiQL keeps its tabs in localStorage; nothing anywhere holds the key any more.
    stored = await page.evaluate(
        "[localStorage, sessionStorage].flatMap((s) => Object.keys(s).map((k) => s.getItem(k)))"
    )
    assert not [value for value in stored if stack.key in value]
    assert page.problems == []


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_a_subscription_runs_over_the_socket_with_the_key(stack: Stack, page: Page) -> None:
    await page.goto(f"{stack.api.base_url}/graphql")
    await page.type("#api-key", stack.key)
    await page.click("#use-key")
    editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
    await page.wait_for("document.querySelector('.graphiql-query-editor .CodeMirror')", what="the editor")
    subscription = "subscription Feed { sessionChanges { kind session { title } } }"
    await page.evaluate(f"{editor}.setValue({json.dumps(subscription)})")
    await asyncio.sleep(0.5)
    await page.click(".graphiql-execute-button")
    for _ in range(100):  # the socket is opened, and the subscription sent, before the run starts
        if [r for r in page.requests if r["method"] == "WEBSOCKET"]:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("GraphiQL opened no WebSocket for the subscription")
    await asyncio.sleep(0.5)
    client = stack.client()
    try:
        await start_ok(client, prompt="Hello from a test", title="seen in GraphiQL")
    finally:
        await client.aclose()
    await page.wait_for(
        "document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
        ".includes('seen in GraphiQL')",
        what="the session change in the result pane",
    )
    assert only_this_server(page, stack.api.base_url) == []
