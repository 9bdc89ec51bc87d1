"""Errors a use case reports to its caller, independent of the transport.

Domains and service layers raise these; the gRPC layer (services.common.rpc) maps them to
canonical status codes, so no domain module imports grpc. Messages are written for the caller:
they name the field and the rule, and never carry internal details.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the service understood and refused; `str(error)` is the caller's message."""


class InvalidArgument(DomainError):
    """A field of the request breaks a rule (gRPC INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


class NotFound(DomainError):
    """The addressed resource does not exist (gRPC NOT_FOUND)."""


class AlreadyExists(DomainError):
    """The resource to create conflicts with an existing one (gRPC ALREADY_EXISTS)."""


class FailedPrecondition(DomainError):
    """The request is valid but conflicts with the resource's current state
    (gRPC FAILED_PRECONDITION)."""


class Unavailable(DomainError):
    """The service cannot answer now; retrying later may succeed (gRPC UNAVAILABLE)."""
