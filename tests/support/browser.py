"""Headless Chromium (Debian's package) driven over the DevTools protocol: no browser download, no driver.

Every request and WebSocket the page opens is recorded, so a test can say the page reached nothing but the
server; clicks and typing are real input events at the element's place on the page.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: commands, events, and a log of every URL it requested."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        # {"url", "method", "postData"} per request, sockets included.
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []  # uncaught exceptions, console errors, the browser's errors
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            method, params = message.get("method", ""), message.get("params", {})
            self.events.append((method, params))
            if method == "Network.requestWillBeSent":
                request = params["request"]
                # data: URLs (GraphiQL's inlined fonts) are not requests; keep the log readable.
                url, post = request["url"][:300], request.get("postData")
                self.requests.append({"url": url, "method": request["method"], "postData": post})
            elif method == "Network.webSocketCreated":
                self.requests.append({"url": params["url"], "method": "WEBSOCKET", "postData": None})
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                exception = details.get("exception", {})
                self.problems.append(exception.get("description") or details.get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                # The browser's own complaints: a Content-Security-Policy violation, a failed load.
                self.problems.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                values = (arg.get("value", arg.get("description")) for arg in params["args"])
                self.problems.append(" ".join(str(value) for value in values))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20.0, what: str = "") -> Any:
        """Polls a JavaScript expression until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        # A DOM node cannot travel by value: it counts as true.
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while True:
            value = await self.evaluate(probe)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or expression}; page problems: {self.problems}"
                )
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view first)."""
        box = await self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e || e.disabled) return null; e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""",
            what=f"{selector} to be clickable",
        )
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    async def type(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        await self.socket.close()


class Chromium:
    """`chromium --headless` with a fresh profile, and its first tab as a Page."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile
        self.process: asyncio.subprocess.Process | None = None
        self.page: Page | None = None

    async def start(self) -> Page:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            self.executable,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.process.returncode is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(trust_env=False) as http:
            for _ in range(50):
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [target for target in targets if target.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
        socket = await connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.page = Page(socket)
        for domain in ("Network.enable", "Page.enable", "Runtime.enable", "Log.enable"):
            await self.page.send(domain)
        return self.page

    async def stop(self) -> None:
        if self.page is not None:
            await self.page.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
