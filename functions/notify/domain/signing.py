"""Webhook signatures: HMAC-SHA256 with the subscription's secret over "<timestamp>.<body>", sent as

    Ragline-Signature: t=<unix seconds>,v1=<hex digest>

Receivers recompute it over the raw body, compare in constant time, and reject old timestamps (the
timestamp is signed, so a captured request cannot be replayed later with a new one)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Ragline-Signature"
DELIVERY_HEADER = "Ragline-Delivery-Id"
EVENT_TYPE_HEADER = "Ragline-Event-Type"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> bool:
    """What a receiver does (docs/events/README.md has the same, to copy)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), fields.get("v1", ""))
