"""Tenant tiers: the limits and the shedding priority each tier gets.

A limit of 0 means unlimited. Windows are in seconds; a bucket of `requests` refills evenly
over `requests_window_s` (so "free: 100 per hour" is `requests=100, requests_window_s=3600`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(default=0, ge=0, description="Requests (jobs) per window; 0: none.")
    requests_window_s: int = Field(default=60, ge=1)
    tokens: int = Field(default=0, ge=0, description="Prompt + max_tokens per window; 0: none.")
    tokens_window_s: int = Field(default=60, ge=1)
    concurrent: int = Field(default=0, ge=0, description="Unfinished jobs at once; 0: none.")
    # Under KV pressure, tiers below INFERQ_SHED_BELOW_PRIORITY are shed first.
    priority: int = Field(default=1, ge=0)


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(requests=100, requests_window_s=3600, tokens=20_000, concurrent=2, priority=0),
    "standard": Tier(requests=600, tokens=200_000, concurrent=16, priority=1),
    "pro": Tier(requests=3000, tokens=2_000_000, concurrent=64, priority=2),
    "unlimited": Tier(priority=3),
}
