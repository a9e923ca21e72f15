"""Cache keys: what makes two requests the same question for L1, and comparable for L2.

L1 hashes the tenant, the model version, the normalized input and every parameter that
changes the output. L2 compares the last user turn by meaning, but only inside a partition
of the same tenant, model version, earlier turns (system prompt included) and parameters.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from inferq.queue.names import cache_answer_key


def quote_segment(value: str) -> str:
    """A key segment no tenant or model name can break out of (':' and '*' are escaped)."""
    return quote(value, safe="")


def normalize_text(text: str) -> str:
    """Same text, same key: Unicode NFC and LF line ends. Other whitespace is kept, since a
    base model continues a trailing space differently."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n")


def _digest(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class CacheScope:
    """Everything a cache key is made of, computed once per request."""

    tenant: str
    model: str
    exact_digest: str
    context_hash: str
    params_hash: str
    # The text L2 embeds (the last user turn, or the raw prompt); None = not eligible.
    semantic_text: str | None

    @property
    def answer_key(self) -> str:
        return cache_answer_key(
            quote_segment(self.tenant), quote_segment(self.model), self.exact_digest
        )

    @property
    def partition(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.model, self.context_hash, self.params_hash)


def build_scope(
    tenant: str,
    model: str,
    prompt: str | None,
    messages: list[dict[str, Any]] | None,
    params: dict[str, Any],
) -> CacheScope:
    """The scope of a prompt (raw text) or of chat messages (role and content per turn).

    `params` are the output-changing parameters as the worker will use them (sampling,
    grammar, choice index); their hash is part of both layers.
    """
    params_hash = _digest(params)
    if messages is not None:
        turns = [[m["role"], normalize_text(m["content"])] for m in messages]
        context_hash = _digest(["messages", turns[:-1]])
        last_role, last_text = turns[-1]
        semantic = last_text.strip() if last_role == "user" else None
        exact = _digest([tenant, model, "messages", turns, params_hash])
    else:
        text = normalize_text(prompt or "")
        context_hash = _digest(["prompt"])
        semantic = text.strip()
        exact = _digest([tenant, model, "prompt", text, params_hash])
    return CacheScope(tenant, model, exact, context_hash, params_hash, semantic or None)
