"""What a request lets the caches do: the body's `cache` field and the Cache-Control header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inferq.errors import InvalidValue
from inferq.settings import Settings

CacheMode = Literal["off", "exact", "semantic"]


@dataclass(frozen=True)
class CachePolicy:
    lookup_exact: bool
    lookup_semantic: bool
    store_exact: bool
    store_semantic: bool
    ttl_s: int

    @property
    def active(self) -> bool:
        return self.lookup_exact or self.store_exact


def cache_directives(header: str | None) -> set[str]:
    """Directive names of a Cache-Control header, lower-cased (values such as max-age dropped)."""
    if not header:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in header.split(",") if part.strip()}


def policy_of(
    settings: Settings, mode: CacheMode | None, ttl: int | None, cache_control: str | None
) -> CachePolicy:
    """`no-cache` skips the lookup but stores; `no-store` looks up but stores nothing.

    mode "off" does neither, "exact" uses L1 only, "semantic" (the default) both layers.
    """
    if ttl is not None and ttl > settings.cache_max_ttl_s:
        raise InvalidValue(
            f"cache.ttl: must be at most {settings.cache_max_ttl_s} seconds", param="cache.ttl"
        )
    directives = cache_directives(cache_control)
    mode = mode or "semantic"
    on = settings.cache_enabled and mode != "off"
    semantic = on and mode == "semantic" and settings.cache_semantic_enabled
    lookup = "no-cache" not in directives
    store = "no-store" not in directives
    return CachePolicy(
        lookup_exact=on and lookup,
        lookup_semantic=semantic and lookup,
        store_exact=on and store,
        store_semantic=semantic and store,
        ttl_s=ttl or settings.cache_ttl_s,
    )
