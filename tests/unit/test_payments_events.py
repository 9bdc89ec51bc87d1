import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from contracts import EventType
from services.common.config import ConfigError
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.messaging.envelope import validate
from services.payments.config import WorkerSettings
from services.payments.domain import Payment, PaymentStatus
from services.payments.service import payment_event, refused_event
from services.payments.tasks import PaymentTasks


def payment(status, reason=None):
    now = datetime.now(UTC)
    return Payment(uuid.uuid4(), "o-1", "alice", 100, "RUB", status, reason, now, now)


def test_a_succeeded_payment_is_a_payment_succeeded_event_keyed_by_order():
    event = payment_event(payment(PaymentStatus.SUCCEEDED))
    validate(event)
    assert event["type"] == EventType.PAYMENT_SUCCEEDED
    assert event["data"]["orderId"] == "o-1" and event["data"]["userId"] == "alice"


def test_a_declined_payment_is_a_payment_failed_event_with_the_reason():
    event = payment_event(payment(PaymentStatus.DECLINED, "too much"))
    assert event["type"] == EventType.PAYMENT_FAILED
    assert event["data"]["declineReason"] == "too much"


def test_a_refunded_payment_is_a_payment_refunded_event():
    event = payment_event(payment(PaymentStatus.REFUNDED))
    validate(event)
    assert event["type"] == EventType.PAYMENT_REFUNDED
    assert (event["data"]["orderId"], event["data"]["status"]) == ("o-1", "REFUNDED")


@pytest.mark.parametrize("status", [PaymentStatus.PENDING, PaymentStatus.CANCELLED])
def test_a_payment_that_moved_no_money_yet_has_no_event(status):
    with pytest.raises(ValueError):
        payment_event(payment(status))


def test_a_refusal_is_a_payment_refused_event_with_the_request_and_the_reason():
    event = refused_event("o-1", "alice", 100, "RUB", "user is blocked")
    validate(event)
    assert (event["type"], event["subject"]) == (EventType.PAYMENT_REFUSED, "order/o-1")
    assert event["data"] == {
        "orderId": "o-1",
        "userId": "alice",
        "amount": 100,
        "currency": "RUB",
        "reason": "user is blocked",
    }


ENV = {
    "SHOPMESH_SERVICE": "payments-worker",
    "SHOPMESH_INSTANCE": "payments-worker-1",
    "SHOPMESH_DATABASE_URL": "postgresql://p:x@127.0.0.1:1/payments",
    "SHOPMESH_KAFKA_BOOTSTRAP": "127.0.0.1:29092,127.0.0.1:29093",
}


def test_worker_settings_need_no_port_sidecar_or_upstreams():
    settings = WorkerSettings.from_env(ENV)
    assert settings.instance == "payments-worker-1"
    assert settings.kafka_bootstrap == ("127.0.0.1:29092", "127.0.0.1:29093")


@pytest.mark.parametrize("missing", ["SHOPMESH_DATABASE_URL", "SHOPMESH_KAFKA_BOOTSTRAP"])
def test_worker_settings_name_a_missing_variable(missing):
    with pytest.raises(ConfigError, match=missing):
        WorkerSettings.from_env({k: v for k, v in ENV.items() if k != missing})


class Task:
    def __init__(self, type_="shopmesh.payment.requested.v1"):
        self.id = uuid.uuid4()
        self.type = type_
        self.data = {"orderId": "o-1", "userId": "alice", "amount": 100, "currency": "RUB"}


class FakeService:
    def __init__(self, results):
        self.results = list(results)
        self.calls = 0
        self.refused: list[tuple[object, ...]] = []

    async def process_payment(self, *args, **kwargs):
        self.calls += 1
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    async def refuse_payment(self, *args):
        self.refused.append(args)


def test_a_task_is_charged_until_its_payment_is_final():
    service = FakeService([payment(PaymentStatus.PENDING), payment(PaymentStatus.SUCCEEDED)])
    tasks = PaymentTasks(service)
    asyncio.run(tasks(None, Task()))
    assert (service.calls, tasks.handled) == (2, 1)


@pytest.mark.parametrize(
    "reason", ["user is blocked", "order o-1 already has a payment with a different amount"]
)
def test_a_refused_task_is_announced_once_and_done_not_retried(reason):
    service = FakeService([FailedPrecondition(reason)])
    tasks = PaymentTasks(service)
    asyncio.run(tasks(None, Task()))
    assert (service.calls, tasks.handled) == (1, 1)
    assert service.refused == [("o-1", "alice", 100, "RUB", reason)]


def test_an_invalid_task_is_not_a_refusal_but_a_poison_message_for_the_dlq():
    service = FakeService([InvalidArgument("amount", "must be a positive number")])
    with pytest.raises(InvalidArgument):
        asyncio.run(PaymentTasks(service)(None, Task()))
    assert service.refused == []


def test_other_event_types_on_the_task_topic_are_ignored():
    service = FakeService([])
    asyncio.run(PaymentTasks(service)(None, Task("something.else")))
    assert service.calls == 0
