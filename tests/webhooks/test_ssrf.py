"""Which addresses a webhook may reach: judged on the resolved address, with the operator's allow-list."""

from __future__ import annotations

import ipaddress

import pytest

from api.webhooks.ssrf import AllowList, BadTarget, UnsafeTarget, forbidden_reason, parse_target, vet

NONE = AllowList.parse([])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.7:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        # Names and odd spellings are judged by where they resolve.
        "http://localhost:9000/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
    ],
)
async def test_vet_refuses_urls_that_lead_to_internal_addresses(url: str) -> None:
    with pytest.raises(UnsafeTarget) as raised:
        await vet(url, NONE)
    assert raised.value.rule == "webhook.ssrf"
    assert "WEBHOOK_ALLOWED_HOSTS" in raised.value.message


async def test_the_allow_list_admits_listed_addresses_names_and_ports() -> None:
    by_ip = AllowList.parse(["127.0.0.1"])
    assert str((await vet("http://127.0.0.1:8123/x", by_ip)).address) == "127.0.0.1"
    # localhost resolves to a listed address (or to ::1, which is not listed).
    by_port = AllowList.parse(["127.0.0.1:8123", "[::1]:8123"])
    assert (await vet("http://localhost:8123/x", by_port)).target.host == "localhost"
    with pytest.raises(UnsafeTarget):
        await vet("http://127.0.0.1:8124/x", by_port)
    by_name = AllowList.parse(["LocalHost"])
    assert (await vet("http://localhost/x", by_name)).target.port == 80
    with pytest.raises(UnsafeTarget):
        await vet("http://127.0.0.1/x", by_name)
    v6 = AllowList.parse(["::1"])
    assert str((await vet("http://[::1]:9/x", v6)).address) == "::1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com",
        "http:///nohost",
        "http://u:p@example.com/",
    ],
)
def test_only_http_and_https_urls_without_credentials(url: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(url)


def test_a_target_knows_its_default_port() -> None:
    assert parse_target("https://Example.COM/hook").host == "example.com"
    assert parse_target("https://example.com/hook").port == 443
    assert parse_target("http://example.com/hook").port == 80


async def test_a_name_that_does_not_resolve_is_a_bad_target() -> None:
    with pytest.raises(BadTarget):
        await vet("https://no-such-host.invalid/hook", NONE)
