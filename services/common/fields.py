"""Rules for the text fields of requests, shared by every service's validation.

Postgres text cannot hold NUL, and no identifier or name has a reason to hold other control
characters either, so they are refused up front with INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import unicodedata

from services.common.errors import InvalidArgument


def has_control_characters(value: str, *, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


def text(
    field: str, value: str, *, max_length: int, required: bool = True, multiline: bool = False
) -> str:
    """`value` if it is a non-empty (unless not `required`) string of at most `max_length`
    characters without control characters (newlines and tabs allowed if `multiline`)."""
    if required and not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters long")
    if has_control_characters(value, allowed="\n\t" if multiline else ""):
        raise InvalidArgument(field, "must not contain control characters")
    return value
