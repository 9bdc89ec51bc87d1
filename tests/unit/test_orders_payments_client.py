"""What orders makes of a failed ProcessPayment: only "payments cannot answer now" falls back to
the payment queue; a refusal is a refusal, and any other error a fault, not unavailability."""

from __future__ import annotations

import uuid

import grpc
import pytest

from services.orders import clients
from services.orders.clients import (
    PaymentRefused,
    PaymentsClient,
    UpstreamFailed,
    UpstreamUnavailable,
    payment_error,
)
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.orders import rpc_error


class RefusingStub:
    """A payments stub whose ProcessPayment ends with `code`, counting the attempts."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.error = rpc_error(code, details)
        self.attempts = 0

    async def ProcessPayment(self, request: object, **_options: object) -> None:
        self.attempts += 1
        raise self.error


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "user is blocked"),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "order o-1 already has a payment with another amount",
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "amount must be at most 1000000000000 minor units"),
    ],
)
@in_a_loop
async def test_a_refusal_from_payments_is_a_refusal_with_its_reason_not_unavailability(
    monkeypatch, code, details
):
    monkeypatch.setattr(clients, "bearer_metadata", lambda: ())
    client = PaymentsClient(port=1)
    client._stub = stub = RefusingStub(code, details)
    try:
        with pytest.raises(PaymentRefused) as refused:
            await client.process_payment(uuid.uuid4(), "alice", 300, "RUB")
    finally:
        await client.close()
    assert (refused.value.code, refused.value.reason) == (code, details)
    assert stub.attempts == 1  # asked once: asking again gets the same answer


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_only_unavailable_deadline_and_overload_mean_payments_cannot_answer_now(code):
    error = payment_error(rpc_error(code, "no answer"))
    assert isinstance(error, UpstreamUnavailable)
    assert (error.service, error.code) == ("payments", code)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
    ],
)
def test_other_errors_are_faults_neither_unavailability_nor_a_refusal(code):
    error = payment_error(rpc_error(code, "something broke"))
    assert type(error) is UpstreamFailed
    assert error.code == code
