"""Thin adapters for the gRPC upstreams of orders: users and payments, via the sidecar."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

import grpc

from services.common.auth.outgoing import bearer_metadata
from services.common.grpc_client import call_with_retries, upstream_channel
from shopmesh.payments.v1 import payments_pb2, payments_pb2_grpc
from shopmesh.users.v1 import users_pb2, users_pb2_grpc

log = logging.getLogger(__name__)

USERS_BUDGET_S = 1.0
PAYMENTS_BUDGET_S = 2.5
# ProcessPayment errors that mean payments could not answer now (down, overloaded, too slow; a
# connection that cannot be made is UNAVAILABLE too): the queued task pays the order later.
PAYMENTS_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# ProcessPayment errors that mean payments understood the request and will not make the
# payment: asking again, now or from the queue, gets the same answer.
PAYMENT_REFUSALS = frozenset(
    {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}
)


class UpstreamUnavailable(Exception):
    """The upstream did not answer usefully within the call's deadline and retries."""

    def __init__(self, service: str, cause: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{service} unavailable: {cause.code().name} {cause.details()}")
        self.service = service
        self.code = cause.code()


class UpstreamFailed(Exception):
    """The upstream answered with an error that means neither "not now" nor "no": a bug or a
    misconfiguration on its side or ours (INTERNAL, UNKNOWN, PERMISSION_DENIED...)."""

    def __init__(self, service: str, cause: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{service} failed: {cause.code().name} {cause.details()}")
        self.service = service
        self.code = cause.code()


class PaymentRefused(Exception):
    """Payments will not make the payment: a blocked user, another payment for the order, a
    field it does not accept. `reason` is payments' own message."""

    def __init__(self, cause: grpc.aio.AioRpcError) -> None:
        self.reason = cause.details() or cause.code().name
        super().__init__(f"payment refused: {cause.code().name} {self.reason}")
        self.code = cause.code()


class UnknownUser(Exception):
    pass


@dataclass(frozen=True)
class UserInfo:
    id: str
    blocked: bool


class PaymentResult(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"
    # Another call is still charging this order and our deadline came first.
    PENDING = "PENDING"
    # The order's payment was cancelled (or refunded): the order ended unpaid meanwhile.
    CANCELLED = "CANCELLED"


RESULTS = {
    payments_pb2.PAYMENT_STATUS_SUCCEEDED: PaymentResult.SUCCEEDED,
    payments_pb2.PAYMENT_STATUS_DECLINED: PaymentResult.DECLINED,
    payments_pb2.PAYMENT_STATUS_PENDING: PaymentResult.PENDING,
    payments_pb2.PAYMENT_STATUS_CANCELLED: PaymentResult.CANCELLED,
    payments_pb2.PAYMENT_STATUS_REFUNDED: PaymentResult.CANCELLED,
}


@dataclass(frozen=True)
class PaymentOutcome:
    payment_id: str
    result: PaymentResult
    decline_reason: str


class UsersClient:
    def __init__(self, port: int) -> None:
        self._channel = upstream_channel(port)
        self._stub = users_pb2_grpc.UserServiceStub(self._channel)

    async def get_user(self, user_id: str) -> UserInfo:
        request = users_pb2.GetUserRequest(user_id=user_id)
        try:
            user = await call_with_retries(
                self._stub.GetUser, request, budget_s=USERS_BUDGET_S, metadata=bearer_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise UnknownUser(user_id) from exc
            raise UpstreamUnavailable("users", exc) from exc
        return UserInfo(id=user.id, blocked=user.blocked)

    async def close(self) -> None:
        await self._channel.close()


class PaymentsClient:
    def __init__(self, port: int) -> None:
        self._channel = upstream_channel(port)
        self._stub = payments_pb2_grpc.PaymentServiceStub(self._channel)

    async def process_payment(
        self, order_id: uuid.UUID, user_id: str, amount: int, currency: str
    ) -> PaymentOutcome:
        """Charge the order once (the order id is the payment's idempotency key)."""
        request = payments_pb2.ProcessPaymentRequest(
            order_id=str(order_id), user_id=user_id, amount=amount, currency=currency
        )
        try:
            payment = await call_with_retries(
                self._stub.ProcessPayment,
                request,
                budget_s=PAYMENTS_BUDGET_S,
                metadata=bearer_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise payment_error(exc) from exc
        return payment_outcome(payment)

    async def close(self) -> None:
        await self._channel.close()


def payment_outcome(payment: payments_pb2.Payment) -> PaymentOutcome:
    return PaymentOutcome(
        payment_id=payment.id,
        result=RESULTS.get(payment.status, PaymentResult.PENDING),
        decline_reason=payment.decline_reason,
    )


def payment_error(cause: grpc.aio.AioRpcError) -> Exception:
    """What a failed ProcessPayment means to orders: UpstreamUnavailable (not now: the queue
    takes over), PaymentRefused (no: the order fails), or UpstreamFailed (a fault)."""
    if cause.code() in PAYMENTS_UNAVAILABLE:
        return UpstreamUnavailable("payments", cause)
    if cause.code() in PAYMENT_REFUSALS:
        return PaymentRefused(cause)
    return UpstreamFailed("payments", cause)
