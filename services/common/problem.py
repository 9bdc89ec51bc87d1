"""RFC 9457 problem details for every HTTP error a service produces, and the problem types.

`problem_middleware` is the one place errors become responses: a `Problem` a handler raises is
its own answer; a domain error (services.common.errors, or a service's subclass of one) is the
problem its `ProblemKind` describes, with the error's message as the detail and its fields as
the `errors` (the kinds of the common errors are `COMMON_KINDS`; a service adds its own); an
aiohttp HTTP error, a database that does not answer and anything unexpected have fixed answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace

from services.common import errors
from services.common.db import DATABASE_UNAVAILABLE

PROBLEM_CONTENT_TYPE = "application/problem+json"

# The problem types (the `type` member) the services answer with.
MALFORMED = "/problems/malformed-request"
VALIDATION = "/problems/validation"
UNAUTHENTICATED = "/problems/unauthenticated"
FORBIDDEN = "/problems/forbidden"
UPGRADE_REQUIRED = "/problems/upgrade-required"
INVALID_CLIENT = "/problems/invalid-client"
UNKNOWN_USER = "/problems/unknown-user"
USER_BLOCKED = "/problems/user-blocked"
TOO_MANY_FAILED_LOGINS = "/problems/too-many-failed-logins"
ORDER_NOT_FOUND = "/problems/order-not-found"
ORDER_NOT_CANCELLABLE = "/problems/order-not-cancellable"
IDEMPOTENCY_KEY_REUSED = "/problems/idempotency-key-reused"
INJECTED_FAULT = "/problems/injected-fault"
# Every "cannot answer now, retry later" (503).
UNAVAILABLE = "/problems/unavailable"

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ProblemKind:
    """How one kind of domain error reads over HTTP; the detail is the error's message."""

    status: int
    title: str
    type: str = "about:blank"
    headers: Mapping[str, str] = field(default_factory=dict)

    def problem(self, error: errors.DomainError) -> Problem:
        return Problem(
            self.status,
            self.title,
            str(error),
            type=self.type,
            errors=error.fields or None,
            headers=self.headers,
        )


ProblemKinds = Mapping[type[errors.DomainError], ProblemKind]

COMMON_KINDS: ProblemKinds = {
    errors.InvalidArgument: ProblemKind(422, "Invalid request", VALIDATION),
    errors.NotFound: ProblemKind(404, "Not found"),
    errors.AlreadyExists: ProblemKind(409, "Conflict"),
    errors.FailedPrecondition: ProblemKind(409, "Conflict"),
    errors.PermissionDenied: ProblemKind(403, "Forbidden", FORBIDDEN),
    errors.Unavailable: ProblemKind(
        503, "Service unavailable", UNAVAILABLE, headers={"Retry-After": "1"}
    ),
}


def kind_of(error: errors.DomainError, kinds: ProblemKinds) -> ProblemKind | None:
    """The kind of `error`'s own class, or else of its nearest base that has one."""
    for cls in type(error).__mro__:
        kind = kinds.get(cls)
        if kind is not None:
            return kind
    return None


def problem_middleware(kinds: ProblemKinds = COMMON_KINDS) -> Middleware:
    """Render Problem, domain errors (by `kinds`: a service's own, over COMMON_KINDS), aiohttp
    HTTP errors and unexpected exceptions as problem+json."""
    known = {**COMMON_KINDS, **kinds}

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as problem:
            return problem.to_response(request.path)
        except errors.DomainError as error:
            kind = kind_of(error, known)
            if kind is None:
                return _internal_error(request)
            return kind.problem(error).to_response(request.path)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return from_http_exception(exc).to_response(request.path)
        except DATABASE_UNAVAILABLE as exc:
            log.warning(
                "database unavailable",
                extra={"path": request.path, "error": f"{type(exc).__name__}: {exc}"},
            )
            unavailable = Problem(
                503,
                "Service Unavailable",
                "the database does not answer; retry later",
                type=UNAVAILABLE,
                headers={"Retry-After": "1"},
            )
            return unavailable.to_response(request.path)
        except Exception:
            return _internal_error(request)

    return problems


def _internal_error(request: web.Request) -> web.Response:
    """The answer to an error nobody expected (a bug): logged with its traceback."""
    log.exception("unhandled error", extra={"method": request.method, "path": request.path})
    problem = Problem(500, "Internal Server Error", "An unexpected error occurred.")
    return problem.to_response(request.path)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
