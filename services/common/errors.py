"""Errors a use case reports to its caller, independent of the transport.

Domains and service layers raise these; the gRPC layer (services.common.rpc) maps them to
canonical status codes and the HTTP layer (services.common.problem) to problem+json, so no
domain module imports grpc or aiohttp. Messages are written for the caller: they name the field
and the rule, and never carry internal details.
"""

from __future__ import annotations

from collections.abc import Sequence

# One field of the request an error is about: {"field": "items[0].quantity", "message": "..."}.
FieldError = dict[str, str]


class DomainError(Exception):
    """A request the service understood and refused; `str(error)` is the caller's message and
    `fields` the fields of the request it is about, if it names any."""

    def __init__(self, message: str, *, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.fields = list(fields)


class InvalidArgument(DomainError):
    """A field of the request breaks a rule (gRPC INVALID_ARGUMENT). The message is
    "<field> <rule>" unless `detail` says more."""

    def __init__(self, field: str, message: str, *, detail: str | None = None) -> None:
        super().__init__(
            detail or f"{field} {message}", fields=[{"field": field, "message": message}]
        )
        self.field = field
        self.message = message


class NotFound(DomainError):
    """The addressed resource does not exist (gRPC NOT_FOUND)."""


class AlreadyExists(DomainError):
    """The resource to create conflicts with an existing one (gRPC ALREADY_EXISTS)."""


class FailedPrecondition(DomainError):
    """The request is valid but conflicts with the resource's current state
    (gRPC FAILED_PRECONDITION)."""


class PermissionDenied(DomainError):
    """The caller is authenticated but may not do this (gRPC PERMISSION_DENIED)."""


class Unavailable(DomainError):
    """The service cannot answer now; retrying later may succeed (gRPC UNAVAILABLE)."""
