"""The Webhook-Signature header: what a receiver checks."""

from __future__ import annotations

import hashlib
import hmac

from api.webhooks.signing import signature_header, verify

SECRET = "a-secret-of-enough-length"
BODY = b'{"hookEvent":"PreToolUse"}'


def test_the_header_is_stripe_style_hmac_of_timestamp_dot_body() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_a_receiver_accepts_its_own_secret_within_the_tolerance() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    assert verify(SECRET, BODY, header, now=1_700_000_100)


def test_a_wrong_secret_a_changed_body_or_an_old_timestamp_is_refused() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    assert not verify("another-secret-entirely", BODY, header, now=1_700_000_000)
    assert not verify(SECRET, BODY + b" ", header, now=1_700_000_000)
    assert not verify(SECRET, BODY, header, now=1_700_000_000 + 301)


def test_the_timestamp_is_signed_so_it_cannot_be_refreshed() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    forged = header.replace("t=1700000000", "t=1700000900")
    assert not verify(SECRET, BODY, forged, now=1_700_000_900)


def test_malformed_headers_are_refused() -> None:
    for header in ["", "v1=abc", "t=1700000000", "t=soon,v1=abc", "garbage"]:
        assert not verify(SECRET, BODY, header, now=1_700_000_000)
