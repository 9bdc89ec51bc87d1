"""Reading a JSON object from an HTTP request body, with problem+json 400s for what is not one.

JSON may escape a lone UTF-16 surrogate ("\\ud800"); Python decodes it into a str that has no
UTF-8 encoding, so it could be neither stored nor echoed in a problem. Such a body is refused
as malformed, whichever string (member names included) holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

from aiohttp import web

from services.common.fields import LONE_SURROGATES, has_lone_surrogates
from services.common.problem import MALFORMED, Problem

JsonPath = tuple[str | int, ...]


class MalformedBodyError(ValueError):
    """The body is not a JSON object (invalid UTF-8 or JSON, a lone surrogate in a string, or
    another JSON type)."""


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Text(NamedTuple):
    """A string in a decoded JSON value: a string value at `path`, or the name of the member
    at `path`."""

    path: JsonPath
    text: str
    is_member_name: bool


def field_name(path: JsonPath) -> str:
    """ "items[0].productId" for ("items", 0, "productId"); "body" for the whole body."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def texts(value: object) -> Iterator[Text]:
    """Every member name and string value in a decoded JSON value, each object's member names
    before its members' values.

    Iterative: the value may be nested as deeply as the decoder allows.
    """
    pending: list[tuple[JsonPath, object]] = [((), value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            yield Text(path, item, is_member_name=False)
        elif isinstance(item, dict):
            for name in item:
                yield Text((*path, name), name, is_member_name=True)
            pending.extend(((*path, name), member) for name, member in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend(((*path, i), member) for i, member in reversed(list(enumerate(item))))


def _lone_surrogate_error(value: object) -> str | None:
    """Which string of a decoded JSON value holds a lone surrogate, as a message, or None."""
    for path, text, is_member_name in texts(value):
        if not has_lone_surrogates(text):
            continue
        if is_member_name:
            return f"a member name in {field_name(path[:-1])} {LONE_SURROGATES}"
        return f"{field_name(path)} {LONE_SURROGATES}"
    return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; MalformedBodyError says why not."""
    if not raw.strip():
        raise MalformedBodyError("the body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBodyError("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise MalformedBodyError("the body is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:
        raise MalformedBodyError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedBodyError(f"the body must be a JSON object, got {json_type(value)}")
    surrogate = _lone_surrogate_error(value)
    if surrogate is not None:
        raise MalformedBodyError(f"the body is not valid Unicode text: {surrogate}")
    return value


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; a 400 problem for another Content-Type or body."""
    content_type = request.content_type
    if content_type != "application/json" and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise Problem(
            400,
            "Malformed request",
            f"Content-Type must be application/json, got {content_type}",
            type=MALFORMED,
        )
    try:
        return parse_json_object(await request.read())
    except MalformedBodyError as exc:
        raise Problem(400, "Malformed request", str(exc), type=MALFORMED) from None
