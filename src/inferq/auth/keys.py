"""API keys: `iq_<prefix>_<secret>`, shown once, stored as the SHA-256 of the whole key.

The secret has 256 bits of entropy, so a fast hash is right (there is nothing to brute-force
that a slow hash would protect); the compare is constant-time. The prefix is visible in
listings and is the lookup key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "iq_"
_PREFIX_LEN = 12
_FORMAT = re.compile(r"^iq_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    plaintext: str  # shown once, never stored
    prefix: str
    secret_hash: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> NewKey:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(_PREFIX_LEN))
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext, prefix, hash_key(plaintext))


def prefix_of(plaintext: str) -> str | None:
    """The lookup prefix of a well-formed key; None for anything else."""
    match = _FORMAT.match(plaintext)
    return match.group(1) if match else None


def looks_like_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def matches(plaintext: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), secret_hash)
