"""Fan-out of payment change notifications to watchers (no database: deliveries are direct)."""

import asyncio
import functools
import logging
import uuid

import pytest

from services.payments import domain, notifier, repository
from services.payments.notifier import PaymentNotifier, Signal


def payment(order_id="o-1", status=domain.PaymentStatus.PENDING):
    request = domain.payment_request(order_id, "alice", 1500, "RUB")
    return domain.Payment(**{**vars(domain.new_payment(request)), "status": status})


async def drain(subscription):
    updates = []
    while (update := await subscription.next(0)) is not None:
        updates.append(update)
    return updates


def in_a_loop(test):
    """Run an async test body in one event loop (a subscription's queue belongs to one)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


@in_a_loop
async def test_a_change_reaches_watchers_of_its_payment_and_of_its_order_only():
    hub = PaymentNotifier("postgresql://unused")
    changed, other = payment("o-1"), payment("o-2")
    with (
        hub.subscribe(payment_id=changed.id) as by_id,
        hub.subscribe(order_id="o-1") as by_order,
        hub.subscribe(order_id="o-2") as unrelated,
    ):
        hub.deliver(changed)
        assert await drain(by_id) == [changed]
        assert await drain(by_order) == [changed]
        assert await drain(unrelated) == []
        hub.deliver(other)
        assert await drain(unrelated) == [other]


@in_a_loop
async def test_updates_arrive_in_the_order_they_were_committed():
    hub = PaymentNotifier("postgresql://unused")
    pending = payment()
    succeeded = domain.Payment(**{**vars(pending), "status": domain.PaymentStatus.SUCCEEDED})
    with hub.subscribe(order_id="o-1") as watcher:
        hub.deliver(pending)
        hub.deliver(succeeded)
        assert await drain(watcher) == [pending, succeeded]


@in_a_loop
async def test_a_watcher_that_falls_behind_loses_its_oldest_updates_not_the_newest(caplog):
    hub = PaymentNotifier("postgresql://unused")
    updates = [payment() for _ in range(notifier.QUEUE_SIZE + 3)]
    with hub.subscribe(order_id="o-1") as watcher:
        for update in updates:
            hub.deliver(update)
        received = await drain(watcher)
    assert received == updates[3:]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3


@in_a_loop
async def test_closing_reaches_current_and_later_subscriptions():
    hub = PaymentNotifier("postgresql://unused")
    with hub.subscribe(order_id="o-1") as before:
        hub.close_subscriptions()
        assert await drain(before) == [Signal.CLOSED]
    with hub.subscribe(payment_id=uuid.uuid4()) as after:
        assert await drain(after) == [Signal.CLOSED]


@in_a_loop
async def test_leaving_a_subscription_stops_its_deliveries():
    hub = PaymentNotifier("postgresql://unused")
    with hub.subscribe(order_id="o-1") as watcher:
        pass
    hub.deliver(payment("o-1"))
    assert await drain(watcher) == []


def test_a_subscription_is_for_exactly_one_key():
    hub = PaymentNotifier("postgresql://unused")
    with pytest.raises(ValueError), hub.subscribe():
        pass
    with pytest.raises(ValueError), hub.subscribe(payment_id=uuid.uuid4(), order_id="o-1"):
        pass


@in_a_loop
async def test_a_notification_payload_is_decoded_and_delivered_and_a_malformed_one_ignored(caplog):
    hub = PaymentNotifier("postgresql://unused")
    changed = payment()
    with hub.subscribe(order_id="o-1") as watcher:
        hub.handle_notification(
            None, 1, repository.CHANNEL, repository.encode_notification(changed)
        )
        hub.handle_notification(None, 1, repository.CHANNEL, '{"id": "not a payment"}')
        assert await drain(watcher) == [changed]
    assert any(r.getMessage() == "malformed payment notification ignored" for r in caplog.records)


@in_a_loop
async def test_waiting_for_an_update_can_time_out():
    hub = PaymentNotifier("postgresql://unused")
    with hub.subscribe(order_id="o-1") as watcher:
        assert await watcher.next(0.01) is None
