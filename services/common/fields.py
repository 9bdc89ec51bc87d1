"""Rules for the text fields of requests, shared by every service's validation.

Every text a client sends passes `character_error` (through `text` or directly) before it is
used: Postgres text cannot hold NUL, a lone UTF-16 surrogate (a JSON "\\ud800" escape, or a
header byte that is not UTF-8 as aiohttp hands it over) has no UTF-8 encoding for asyncpg to
send, and no identifier or name has a reason to hold other control characters either. Such
text is refused up front with a message naming the field, instead of failing in the database.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

from services.common.errors import InvalidArgument

CONTROL_CHARACTERS = "must not contain control characters"
LONE_SURROGATES = "must not contain lone surrogates"


def has_lone_surrogates(value: str) -> bool:
    """Whether `value` holds a surrogate code point, the only kind without a UTF-8 encoding."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def character_error(value: str, *, allowed: str = "") -> str | None:
    """Why `value` cannot be stored as text (lone surrogates, or control characters other than
    those in `allowed`), or None if it can."""
    if has_lone_surrogates(value):
        return LONE_SURROGATES
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
        return CONTROL_CHARACTERS
    return None


def single_parameter(
    parameters: Mapping[str, Sequence[str]], name: str, *, max_length: int, allowed: str = ""
) -> str | None:
    """The one value of a query or form parameter, or None when it is absent. ValueError, with
    a message naming it, when it is sent more than once, is longer than `max_length` or holds
    a control character (but those in `allowed`)."""
    values = parameters.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"{name} must not be sent more than once")
    value = values[0]
    if len(value) > max_length:
        raise ValueError(f"{name} is too long")
    problem = character_error(value, allowed=allowed)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return value


def text(
    field: str, value: str, *, max_length: int, required: bool = True, multiline: bool = False
) -> str:
    """`value` if it is a non-empty (unless not `required`) string of at most `max_length`
    characters without control characters (newlines and tabs allowed if `multiline`) or lone
    surrogates."""
    if required and not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters long")
    problem = character_error(value, allowed="\n\t" if multiline else "")
    if problem is not None:
        raise InvalidArgument(field, problem)
    return value
