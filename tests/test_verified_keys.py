"""The cache of recently verified API keys: it trusts a key for at most its TTL, never past
the key's own expiry, and forgets everything when told (a revocation in this process)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from inferq.auth.principal import Principal
from inferq.auth.tiers import DEFAULT_TIERS
from inferq.auth.verified import VerifiedKeys

PRINCIPAL = Principal(
    uuid.uuid4(), "t", "free", DEFAULT_TIERS["free"], frozenset({"inference"}), uuid.uuid4()
)


def test_a_verified_key_is_trusted_until_its_ttl() -> None:
    verified = VerifiedKeys(ttl_s=0.2)
    verified.put("iq_key_a", PRINCIPAL, None)
    assert verified.get("iq_key_a") is PRINCIPAL
    assert verified.get("iq_key_b") is None
    time.sleep(0.25)
    assert verified.get("iq_key_a") is None


def test_never_past_the_keys_own_expiry() -> None:
    verified = VerifiedKeys(ttl_s=60)
    verified.put("iq_key_a", PRINCIPAL, datetime.now(UTC) + timedelta(seconds=0.1))
    assert verified.get("iq_key_a") is PRINCIPAL
    time.sleep(0.15)
    assert verified.get("iq_key_a") is None


def test_clear_forgets_and_zero_ttl_keeps_nothing() -> None:
    verified = VerifiedKeys(ttl_s=60)
    verified.put("iq_key_a", PRINCIPAL, None)
    verified.clear()
    assert verified.get("iq_key_a") is None
    off = VerifiedKeys(ttl_s=0)
    off.put("iq_key_a", PRINCIPAL, None)
    assert off.get("iq_key_a") is None
