"""Reading a JSON object from an HTTP request body, with problem+json 400s for what is not one."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.common.problem import Problem

MALFORMED = "/problems/malformed-request"


class MalformedBodyError(ValueError):
    """The body is not a JSON object (invalid UTF-8 or JSON, or another JSON type)."""


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
