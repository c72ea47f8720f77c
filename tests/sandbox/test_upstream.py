"""The gateway's side toward the model API: the proxy it takes from the environment, and TLS to the
upstream on both event loops the server may run (its own network backend, api/sandbox/network.py)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api.sandbox.model_gateway import ModelGateway, Upstream
from api.sandbox.upstream import environment_proxy
from tests.sandbox.test_model_gateway import client, echo_server


@pytest.mark.parametrize(
    ("url", "environ", "proxy"),
    [
        ("https://api.anthropic.com", {}, None),
        ("https://api.anthropic.com", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.anthropic.com", {"HTTP_PROXY": "http://p:3128"}, None),
        ("http://model.internal", {"HTTP_PROXY": "p:3128"}, "http://p:3128"),
        ("https://api.anthropic.com", {"ALL_PROXY": "socks5://p:1080"}, "socks5://p:1080"),
        (
            "https://api.anthropic.com",
            {"https_proxy": "http://lower", "HTTPS_PROXY": "http://upper"},
            "http://lower",
        ),
        ("https://api.anthropic.com", {"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}, None),
        (
            "https://api.anthropic.com",
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "example.com, anthropic.com"},
            None,
        ),
        ("https://anthropic.com", {"HTTPS_PROXY": "http://p", "NO_PROXY": "anthropic.com"}, None),
        ("https://anthropic.com", {"HTTPS_PROXY": "http://p", "NO_PROXY": ".anthropic.com"}, "http://p"),
        ("https://notanthropic.com", {"HTTPS_PROXY": "http://p", "NO_PROXY": "anthropic.com"}, "http://p"),
        ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://p", "no_proxy": "127.0.0.1"}, None),
        ("http://[::1]:8080", {"HTTP_PROXY": "http://p", "no_proxy": "::1"}, None),
        ("http://localhost:8080", {"HTTP_PROXY": "http://p", "no_proxy": "localhost"}, None),
        ("http://m.internal:8080", {"HTTP_PROXY": "http://p", "no_proxy": "http://m.internal:8080"}, None),
        ("http://m.internal:8080", {"HTTP_PROXY": "http://p", "no_proxy": "http://m.internal:9"}, "http://p"),
    ],
)
def test_the_proxy_is_the_one_httpx_took_from_the_environment(
    url: str, environ: dict[str, str], proxy: str | None
) -> None:
    assert environment_proxy(url, environ) == proxy


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_calls_reach_an_https_upstream_and_its_certificate_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """The production upstream is https: the gateway's connections start TLS, verify the upstream's
    certificate against the trusted ones (SSL_CERT_FILE, as httpx's client did), and keep the connection
    for the next call. An untrusted certificate is a clean 502."""
    cert, key = self_signed(tmp_path)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def calls(trusted: bool) -> list[httpx.Response]:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert) if trusted else "/etc/ssl/certs/ca-certificates.crt")
        upstream = echo_server(ssl_certfile=str(cert), ssl_keyfile=str(key))
        await upstream.start()
        gateway = ModelGateway(
            Upstream(base_url=f"https://localhost:{upstream.port}/prefix", api_key="operator-key"),
            tmp_path / "gw.sock",
        )
        await gateway.start()
        try:
            issued = gateway.issue("s")
            issued.open = True
            async with client(gateway, issued.token) as http:
                return [await http.post("/v1/messages", content=b'{"n": 1}') for _ in range(2)]
        finally:
            await gateway.stop()
            await upstream.stop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        answers = runner.run(calls(trusted=True))
        refused = runner.run(calls(trusted=False))
    seen = [answer.json() for answer in answers]
    assert [s["body"] for s in seen] == ['{"n": 1}'] * 2
    assert seen[0]["x-api-key"] == "operator-key"
    assert seen[0]["client-port"] == seen[1]["client-port"]
    assert [answer.status_code for answer in refused] == [502, 502]
    assert refused[0].json()["error"]["type"] == "api_error"
