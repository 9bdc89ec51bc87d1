"""Keyset pagination for list RPCs ordered by (created_at, id).

A page token is opaque to clients: URL-safe base64 of the JSON `[created_at, id]` of the last
item of the previous page. The next page is the rows strictly after that position, so inserts
between pages neither repeat nor skip rows that were already there.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from services.common.errors import InvalidArgument
from services.common.fields import character_error

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TOKEN_LENGTH = 512


def page_size(requested: int, *, field: str = "page_size") -> int:
    """0 means the default; 1..MAX_PAGE_SIZE as asked; anything else is INVALID_ARGUMENT."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            field, f"must be between 1 and {MAX_PAGE_SIZE} (or 0 for the default)"
        )
    return requested


def encode_page_token(created_at: datetime, item_id: str) -> str:
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    raw = json.dumps([created_at.isoformat(), item_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def invalid_page_token(field: str = "page_token") -> InvalidArgument:
    return InvalidArgument(
        field, "is not a valid page token; use the next_page_token of the previous page"
    )


def decode_page_token(token: str, *, field: str = "page_token") -> tuple[datetime, str]:
    """The (created_at, id) position in `token`; INVALID_ARGUMENT if it is not one we issued."""
    invalid = invalid_page_token(field)
    if len(token) > MAX_TOKEN_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, item_id = json.loads(raw)
        position = datetime.fromisoformat(created_at)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise invalid from None
    if (
        position.tzinfo is None
        or not isinstance(item_id, str)
        or not item_id
        or character_error(item_id) is not None
    ):
        raise invalid
    return position, item_id
