"""JSON bodies and messages decoded strictly, for every surface that reads them itself."""

from __future__ import annotations

from typing import Any

import pydantic_core


def strict_json(raw: str | bytes) -> Any:
    """JSON in UTF-8, as RFC 8259 has it; ValueError, with the place, otherwise.

    Unlike `json.loads`, a lone surrogate escape ("\\ud800") is refused. It decodes to a str
    that cannot be encoded again, so it failed later, in the tokenizer, Redis or PostgreSQL,
    as a 500.
    """
    return pydantic_core.from_json(raw)
