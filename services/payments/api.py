"""gRPC entrypoints: protobuf messages in and out; errors are raised as domain errors and
mapped to status codes by services.common.rpc.ErrorInterceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common import client_address
from services.common.auth.principal import (
    ADMIN_ROLE,
    current_principal,
    require_self_or_admin,
)
from services.payments.domain import Payment, PaymentStatus
from services.payments.service import PaymentService
from shopmesh.payments.v1 import payments_pb2, payments_pb2_grpc

SERVICE_ROLE = "service"
SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name

STATUS = {
    PaymentStatus.PENDING: payments_pb2.PAYMENT_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: payments_pb2.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.DECLINED: payments_pb2.PAYMENT_STATUS_DECLINED,
    PaymentStatus.CANCELLED: payments_pb2.PAYMENT_STATUS_CANCELLED,
    PaymentStatus.REFUNDED: payments_pb2.PAYMENT_STATUS_REFUNDED,
}


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, service: PaymentService) -> None:
        self._service = service

    async def ProcessPayment(
        self,
        request: payments_pb2.ProcessPaymentRequest,
        context: grpc.aio.ServicerContext[payments_pb2.ProcessPaymentRequest, payments_pb2.Payment],
    ) -> payments_pb2.Payment:
        principal = current_principal()
        require_self_or_admin(principal, request.user_id, SERVICE_ROLE)
        # A user calling for themselves through the edge (POST /payments) charges nothing; see
        # process_payment. orders calls with the user's own token too, but from inside the mesh:
        # only the edge sets the client address, on every public request.
        public = client_address.from_metadata(context.invocation_metadata()) is not None
        privileged = principal.has_role(SERVICE_ROLE) or principal.has_role(ADMIN_ROLE)
        acts_as_user = public and not privileged
        payment = await self._service.process_payment(
            request.order_id,
            request.user_id,
            request.amount,
            request.currency,
            time_remaining_s=context.time_remaining(),
            own_payment_only=acts_as_user,
        )
        return to_proto(payment)

    async def GetPayment(
        self,
        request: payments_pb2.GetPaymentRequest,
        context: grpc.aio.ServicerContext[payments_pb2.GetPaymentRequest, payments_pb2.Payment],
    ) -> payments_pb2.Payment:
        payment = await self._service.get_payment(request.payment_id)
        require_self_or_admin(current_principal(), payment.user_id, SERVICE_ROLE)
        return to_proto(payment)

    async def ListPayments(
        self,
        request: payments_pb2.ListPaymentsRequest,
        context: grpc.aio.ServicerContext[
            payments_pb2.ListPaymentsRequest, payments_pb2.ListPaymentsResponse
        ],
    ) -> payments_pb2.ListPaymentsResponse:
        require_self_or_admin(current_principal(), request.user_id, SERVICE_ROLE)
        page = await self._service.list_payments(
            request.user_id, request.page_size, request.page_token
        )
        return payments_pb2.ListPaymentsResponse(
            payments=[to_proto(payment) for payment in page.payments],
            next_page_token=page.next_page_token,
        )

    async def WatchPayment(
        self,
        request: payments_pb2.WatchPaymentRequest,
        context: grpc.aio.ServicerContext[
            payments_pb2.WatchPaymentRequest, payments_pb2.PaymentUpdate
        ],
    ) -> AsyncIterator[payments_pb2.PaymentUpdate]:
        key = request.WhichOneof("key")
        updates = self._service.watch_payment(
            payment_id=request.payment_id if key == "payment_id" else None,
            order_id=request.order_id if key == "order_id" else None,
        )
        principal = current_principal()
        async for payment in updates:
            require_self_or_admin(principal, payment.user_id, SERVICE_ROLE)
            yield payments_pb2.PaymentUpdate(payment=to_proto(payment))


def to_proto(payment: Payment) -> payments_pb2.Payment:
    created_at, updated_at = Timestamp(), Timestamp()
    created_at.FromDatetime(payment.created_at)
    updated_at.FromDatetime(payment.updated_at)
    return payments_pb2.Payment(
        id=str(payment.id),
        order_id=payment.order_id,
        user_id=payment.user_id,
        amount=payment.amount,
        currency=payment.currency,
        status=STATUS[payment.status],
        decline_reason=payment.decline_reason or "",
        created_at=created_at,
        updated_at=updated_at,
    )
