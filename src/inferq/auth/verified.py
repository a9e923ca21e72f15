"""API keys verified recently, so a burst of requests costs one database read, not one each.

A key revoked through this API process stops working at once (the admin route clears the
cache). A revocation made elsewhere (the CLI, another API process), a disabled tenant or a
changed tier takes effect within `auth_cache_ttl_s`: the trade LiteLLM makes with its key cache
(60 s by default), here 5 s. Only successes are kept, and only under a hash of the key.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime

from inferq.auth.principal import Principal


class VerifiedKeys:
    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, credential: str) -> Principal | None:
        digest = _digest(credential)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.time():
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, credential: str, principal: Principal, expires_at: datetime | None) -> None:
        if self._ttl_s <= 0:
            return
        valid_until = time.time() + self._ttl_s
        if expires_at is not None:
            valid_until = min(valid_until, expires_at.timestamp())
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # a flood of distinct keys costs database reads, not memory
        self._entries[_digest(credential)] = (valid_until, principal)

    def clear(self) -> None:
        self._entries.clear()


def _digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()
