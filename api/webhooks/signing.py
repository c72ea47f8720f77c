"""The `Webhook-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (Stripe style).

The timestamp is inside the signed text, so a receiver that also checks its age refuses replays.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Webhook-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


def verify(
    secret: str, body: bytes, header: str, *, now: float, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """What a receiver does: the header parses, is recent, and one v1 matches (constant-time)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
