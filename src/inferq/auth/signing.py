"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of
id.timestamp.body>` under a `whsec_<base64>` secret; several space-separated signatures may
be sent (secret rotation), and any one that matches is enough."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


class BadSignature(ValueError):
    """The message is not signed by this secret, or is too old or too new."""


def verify(
    secret: str, headers: dict[str, str], body: bytes, tolerance_s: int, now: float | None = None
) -> str:
    """The verified webhook-id; BadSignature otherwise."""
    webhook_id = headers.get("webhook-id", "")
    raw_ts = headers.get("webhook-timestamp", "")
    offered = headers.get("webhook-signature", "")
    if not webhook_id or not raw_ts.isdigit() or not offered:
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = int(raw_ts)
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise BadSignature("webhook-timestamp is too far from the current time")
    expected = sign(secret, webhook_id, timestamp, body)
    if not any(hmac.compare_digest(expected, sig) for sig in offered.split()):
        raise BadSignature("no signature matches")
    return webhook_id
