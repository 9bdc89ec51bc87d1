"""RFC 9457 problem details for every HTTP error a service produces."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from opentelemetry import trace

from services.common.db import DATABASE_UNAVAILABLE

PROBLEM_CONTENT_TYPE = "application/problem+json"
# The problem type of every "cannot answer now, retry later" (503).
UNAVAILABLE = "/problems/unavailable"

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers of an aiohttp HTTPException that describe its own plain-text body.
_BODY_HEADERS = frozenset({hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING})


class Problem(Exception):
    """An error the service reports to the client as application/problem+json.

    `errors` lists field-level details: [{"field": "items[0].quantity", "message": "..."}].
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str = "about:blank",
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors
        self.headers = dict(headers or {})

    def to_dict(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:  # the request's trace, to find it in Jaeger and the logs
            body["trace_id"] = trace.format_trace_id(span_context.trace_id)
        return body

    def to_response(self, instance: str) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.to_dict(instance), ensure_ascii=False).encode(),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def from_http_exception(exc: web.HTTPException) -> Problem:
    """The problem for one of aiohttp's own HTTP errors (unknown route, 405, 413...)."""
    phrase = _reason_phrase(exc.status)
    detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else None
    headers = {k: v for k, v in exc.headers.items() if k not in _BODY_HEADERS}
    return Problem(exc.status, phrase, detail, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render Problem, aiohttp HTTP errors and unexpected exceptions as problem+json."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.to_response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc).to_response(request.path)
    except DATABASE_UNAVAILABLE as exc:
        log.warning(
            "database unavailable",
            extra={"path": request.path, "error": f"{type(exc).__name__}: {exc}"},
        )
        problem = Problem(503, "Service Unavailable", "the database does not answer; retry later",
                          type=UNAVAILABLE, headers={"Retry-After": "1"})  # fmt: skip
        return problem.to_response(request.path)
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        problem = Problem(500, "Internal Server Error", "An unexpected error occurred.")
        return problem.to_response(request.path)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
