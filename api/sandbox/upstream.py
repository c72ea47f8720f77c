"""The model gateway's side toward the model API: the operator's endpoint and credentials, and the
forwarding of one call to it.

Every model call of a sandboxed CLI passes here, so this is httpcore's connection pool driven directly
(keep-alive, TLS, an HTTP(S) or SOCKS proxy from the environment), on asyncio's own transports
(api/sandbox/network.py), with the request's headers as the ASGI server gave them: httpx's client added
its request and response models, its header merging and, for a streamed request body, chunked transfer
encoding to a call whose body had a length. A body up to
BUFFERED_BODY_BYTES is read whole (the model cannot start before it has all of it) and sent with its
length; a larger one streams through, so a sandbox cannot make the server hold more than that of a call.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import httpcore
import httpx
import orjson
import structlog
from starlette.types import Receive, Scope, Send

from api.sandbox.network import AsyncioBackend

log = structlog.get_logger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
# Bodies up to this size are read whole and sent with their length; larger ones stream through.
BUFFERED_BODY_BYTES = 4 * 1024 * 1024
# Streams of a long turn may pause for minutes between tokens; connects must not.
_TIMEOUTS = {"timeout": {"connect": 15.0, "read": 600.0, "write": 60.0, "pool": 15.0}}
# Credentials and hop-by-hop headers never cross the gateway in either direction.
_DROP_REQUEST = frozenset(
    {
        b"host",
        b"x-api-key",
        b"authorization",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"proxy-authorization",
        b"te",
        b"upgrade",
    }
)
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})
# What httpcore raises for a model API it cannot reach or that breaks the protocol.
UPSTREAM_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


@dataclass(frozen=True)
class Upstream:
    """Where model calls really go, and with which of the operator's credentials."""

    base_url: str
    api_key: str | None = None
    auth_token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Upstream:
        """The operator's ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN and custom headers."""
        headers: dict[str, str] = {}
        for line in (env.get("ANTHROPIC_CUSTOM_HEADERS") or "").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers[name.strip()] = value.strip()
        return cls(
            base_url=(env.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM).rstrip("/"),
            api_key=env.get("ANTHROPIC_API_KEY") or None,
            auth_token=env.get("ANTHROPIC_AUTH_TOKEN") or None,
            extra_headers=headers,
        )

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self.auth_token:
            headers["authorization"] = f"Bearer {self.auth_token}"
        return headers


def environment_proxy(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy httpx's client (trust_env) would take for `url` from the environment: HTTPS_PROXY or
    HTTP_PROXY by the URL's scheme, else ALL_PROXY (lower case first), unless NO_PROXY names the host,
    curl's way ("*"; a host, which also covers its subdomains; ".domain" for subdomains only; an IP
    address or localhost exactly; or a URL prefix such as http://host:port)."""

    def get(name: str) -> str:
        return environ.get(name) or environ.get(name.upper()) or ""

    target = httpx.URL(url)
    for entry in (e.strip() for e in get("no_proxy").split(",")):
        if entry == "*":
            return None
        if entry and _bypasses(entry, target):
            return None
    proxy = get(f"{target.scheme}_proxy") or get("all_proxy")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypasses(entry: str, target: httpx.URL) -> bool:
    if "://" in entry:
        pattern = httpx.URL(entry)
        return (
            pattern.scheme == target.scheme
            and pattern.host == target.host
            and (pattern.port is None or pattern.port == target.port)
        )
    if entry.lower() == "localhost" or _is_ip(entry):
        return target.host == entry.lower().strip("[]")
    if entry.startswith("."):
        return re.fullmatch(rf".+{re.escape(entry)}", target.host) is not None
    return re.fullmatch(rf"(.+\.)?{re.escape(entry)}", target.host) is not None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


class _ClientGone(Exception):
    """The CLI went away while its request body was still streaming in."""


class Forwarder:
    """Sends a call on to the upstream, with the operator's credentials, and streams its answer back."""

    def __init__(self, upstream: Upstream, proxy: str | None = None) -> None:
        url = httpx.URL(upstream.base_url)
        self._origin = (url.raw_scheme, url.raw_host, url.port)
        self._base_path = url.raw_path.rstrip(b"/")
        self._host = url.netloc
        added = {name.lower(): value for name, value in upstream.auth_headers().items()}
        self._added = [(name.encode(), value.encode()) for name, value in added.items()]
        # The operator's custom headers replace the CLI's of the same name.
        self._dropped = _DROP_REQUEST | {name for name, _ in self._added}
        # httpx's client defaults: keep-alive, up to 20 idle connections for 5 s, 100 at once.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            proxy=_httpcore_proxy(proxy) if proxy else None,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=AsyncioBackend(),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __call__(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"host", self._host)]
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name not in self._dropped:
                headers.append((name, value))
        headers.extend(self._added)
        body = await _request_body(receive)
        if body is None:
            return  # the CLI is gone
        if isinstance(body, bytes):
            if body:
                headers.append((b"content-length", str(len(body)).encode()))
        else:
            headers.append((b"content-length", length) if length else (b"transfer-encoding", b"chunked"))
        # The path as the CLI sent it (the gateway checked its decoded form).
        target = self._base_path + (scope.get("raw_path") or quote(scope["path"]).encode())
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        scheme, host, port = self._origin
        request = httpcore.Request(
            scope["method"],
            httpcore.URL(scheme=scheme, host=host, port=port, target=target),
            headers=headers,
            content=body,
            extensions=_TIMEOUTS,
        )
        try:
            response = await self._pool.handle_async_request(request)
        except _ClientGone:
            return
        except UPSTREAM_ERRORS as exc:
            log.warning("model_gateway.upstream_failed", session_id=session_id, error=repr(exc))
            await error(send, 502, "api_error", f"the model API could not be reached: {type(exc).__name__}")
            return
        try:
            await _stream_back(response, receive, send)
        finally:
            await response.aclose()


async def _request_body(receive: Receive) -> bytes | AsyncIterator[bytes] | None:
    """The whole body, or (beyond BUFFERED_BODY_BYTES) an iterator of it; None if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        if size > BUFFERED_BODY_BYTES:
            return _streamed_body(chunks, receive)


async def _streamed_body(read: list[bytes], receive: Receive) -> AsyncIterator[bytes]:
    for chunk in read:
        yield chunk
    read.clear()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _stream_back(response: httpcore.Response, receive: Receive, send: Send) -> None:
    """The upstream's answer, chunk by chunk as it comes; if the CLI goes away meanwhile, the stream is
    cut (its call was interrupted: a long turn must not go on costing tokens for no one)."""
    task = asyncio.current_task()
    assert task is not None
    done = False
    gone = False

    def disconnected(_: object) -> None:
        nonlocal gone
        # receive() answers http.disconnect once the client is gone, and also once the response is
        # complete (done by then).
        if not done:
            gone = True
            task.cancel()

    # After the body, the only thing receive() reports is the client's disconnect.
    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(disconnected)
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k, v) for k, v in response.headers if k.lower() not in _DROP_RESPONSE],
            }
        )
        async for chunk in response.aiter_stream():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
    finally:
        done = True
        watcher.cancel()


async def error(send: Send, status: int, kind: str, message: str) -> None:
    """The Messages API's own error shape, so the CLI reports it as it would any API error."""
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _httpcore_proxy(url: str) -> httpcore.Proxy:
    # As httpx's transport makes it: credentials in the URL become the proxy's basic auth.
    proxy = httpx.Proxy(url)
    if proxy.url.scheme in ("socks5", "socks5h"):
        # httpx refuses such a proxy at once without its optional dependency; so does the gateway.
        if importlib.util.find_spec("socksio") is None:
            raise ImportError("a SOCKS proxy needs the 'socksio' package (pip install httpx[socks])")
        return httpcore.Proxy(url=_url(proxy.url), auth=proxy.raw_auth)
    return httpcore.Proxy(url=_url(proxy.url), auth=proxy.raw_auth, headers=proxy.headers.raw)


def _url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
