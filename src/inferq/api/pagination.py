"""Opaque keyset cursors for lists ordered by (created_at, id), newest first."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from inferq.errors import InvalidRequest


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """The cursor of the last row of a page."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor stands for; 400 `invalid_cursor` for anything else."""
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except ValueError:
        raise InvalidRequest(
            "The cursor is not one this API gave out.", param="cursor", code="invalid_cursor"
        ) from None
