"""Kafka-backed flows under failure: payments failing (the queue takes over), a worker
SIGKILLed mid-stream, every broker down (the outbox buffers), a poison task (DLQ)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.cloudevents import cloud_event
from mesh.components.kafka_auth import admin_options, options_of
from mesh.runtime.supervisor import Mesh
from tests.chaos.test_payments_faults import injected_fault_seen
from tests.integration.test_messaging_flow import (
    WORKERS,
    assert_charged_once,
    orders_client,
    place,
    place_many,
    query,
    wait_all,
)
from tests.integration.test_messaging_flow import workers as workers
from tests.integration.test_observability import query as prometheus_query
from tests.support import wait_for


def test_orders_fall_back_to_the_queue_when_payments_fail_and_are_each_charged_once(
    mesh: Mesh, tokens, fault, workers, payments_grpc
) -> None:
    fault("payments", error_rate=1.0, methods=["ProcessPayment"])
    wait_for(lambda: injected_fault_seen(payments_grpc), timeout=15,
             what="the payments fault flag to take effect")  # fmt: skip
    with orders_client(mesh, tokens, "bob") as client:
        orders = place_many(client, "bob", 12, respond_async=False)
    ids = [o["id"] for o in orders]
    # Each synchronous attempt fails: the order answers PAYMENT_PENDING, or PAID if a worker
    # charged it from the task queued with it before the attempt gave up.
    assert all(o["status"] == "PAID" or "payments unavailable" in o["statusReason"]
               for o in orders), orders  # fmt: skip

    wait_all(mesh, ids, "PAID", timeout=90)  # the workers use the service layer, not gRPC
    per_worker = assert_charged_once(mesh, ids)
    assert set(per_worker) <= set(WORKERS), per_worker
    print(f"12 deferred orders charged per worker: {dict(per_worker)}")


def test_a_worker_killed_mid_stream_leaves_every_task_done_exactly_once(
    mesh: Mesh, tokens, workers
) -> None:
    placed: list[dict] = []
    with orders_client(mesh, tokens, "bob") as client:
        feeder = threading.Thread(
            target=lambda: placed.extend(place_many(client, "bob", 60, respond_async=True))
        )
        feeder.start()
        wait_for(
            lambda: query(mesh, "payments", "SELECT 1 FROM payments WHERE charged_by = $1 "
                          "AND updated_at > now() - interval '5 seconds'", WORKERS[0]),
            timeout=30,
            what=f"{WORKERS[0]} to charge something",
        )  # fmt: skip
        workers.kill(WORKERS[0])
        feeder.join()
    try:
        ids = [o["id"] for o in placed]
        wait_all(mesh, ids, "PAID", timeout=120)
        per_worker = assert_charged_once(mesh, ids)
        print(f"60 tasks with {WORKERS[0]} SIGKILLed mid-stream, charged per worker: {per_worker}")
    finally:
        workers.start(WORKERS[0])


def test_orders_are_accepted_with_every_broker_down_and_the_outbox_drains_after(
    mesh: Mesh, tokens
) -> None:
    killed = mesh.kill("kafka", hold=True)
    try:
        with orders_client(mesh, tokens, "bob") as client:
            orders = [place(client, "bob", respond_async=False) for _ in range(10)]
        assert {o["status"] for o in orders} == {"PAID"}, [
            (o["id"], o["status"], o["statusReason"]) for o in orders if o["status"] != "PAID"
        ]
        ids = [o["id"] for o in orders]
        unpublished = query(
            mesh,
            "orders",
            "SELECT topic, count(*) AS n FROM outbox "
            "WHERE key = ANY($1::text[]) AND published_at IS NULL GROUP BY topic",
            ids,
        )
        assert {row["topic"]: row["n"] for row in unpublished} == {"order-events": 10}, (
            "one PAID status event per order waiting in the outbox, and no payment task: each "
            "was withdrawn when its order was paid at once"
        )
    finally:
        for name in killed:
            mesh.start(name, say=lambda _: None)

    def drained() -> bool:
        rows = query(
            mesh,
            "orders",
            "SELECT count(*) AS n FROM outbox WHERE key = ANY($1::text[]) AND published_at IS NULL",
            ids,
        )
        return rows[0]["n"] == 0

    wait_for(drained, timeout=120, what="the orders outbox to drain", interval=0.5)
    # Nothing lost: notifications got every status event (and every payment event).
    wait_for(
        lambda: (
            query(
                mesh,
                "notifications",
                "SELECT count(DISTINCT data->>'orderId') AS n FROM notifications "
                "WHERE type = 'shopmesh.order.status_changed.v1' AND data->>'orderId' = ANY($1)",
                ids,
            )[0]["n"]
            == 10
        ),
        timeout=60,
        what="every order's status event in notifications",
    )


async def _produce_tasks(
    bootstrap: str, sign_in: dict[str, Any], key: bytes, values: list[bytes]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **sign_in)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait("payment-tasks", value=value, key=key)
    finally:
        await producer.stop()


async def _dlq_messages(bootstrap: str, sign_in: dict[str, Any], key: bytes) -> list:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **sign_in,
    )
    await consumer.start()
    try:
        tp = TopicPartition("payment-tasks.dlq", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found = []
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            found += [r for r in batch.get(tp, []) if r.key == key]
        return found
    finally:
        await consumer.stop()


@pytest.mark.usefixtures("workers")
def test_a_poison_task_goes_to_the_dlq_and_the_partition_keeps_flowing(mesh: Mesh) -> None:
    key = f"poison-{uuid.uuid4().hex[:8]}".encode()
    poison = cloud_event(
        source="orders",
        type="shopmesh.payment.requested.v1",
        subject="order/poison",
        data={"orderId": key.decode(), "userId": "bob", "amount": -5, "currency": "RUB"},
    )
    after = [str(uuid.uuid4()) for _ in range(3)]  # later tasks on the same key (partition)
    tasks = [
        cloud_event(
            source="orders",
            type="shopmesh.payment.requested.v1",
            subject=f"order/{order_id}",
            data={"orderId": order_id, "userId": "bob", "amount": 100, "currency": "RUB"},
        )
        for order_id in after
    ]
    bootstrap = mesh.topology.kafka_bootstrap()
    values = [json.dumps(e).encode() for e in (poison, *tasks)]
    dlq = 'sum(shopmesh_dlq_messages_total{service="payments-worker", topic="payment-tasks"})'
    dead_lettered_before = prometheus_query(mesh, dlq)
    # As the service that puts tasks on the queue; read back as the project's tools.
    asyncio.run(_produce_tasks(bootstrap, options_of(mesh.state, "orders"), key, values))

    wait_for(
        lambda: (
            len(query(mesh, "payments", "SELECT 1 FROM payments WHERE order_id = ANY($1)", after))
            == 3
        ),
        timeout=60,
        what="the tasks after the poison one to be charged",
    )
    dead = wait_for(
        lambda: asyncio.run(_dlq_messages(bootstrap, admin_options(mesh.state), key)),
        timeout=30,
        what="the poison task in payment-tasks.dlq",
    )
    assert len(dead) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["shopmesh-original-topic"] == "payment-tasks"
    assert headers["shopmesh-attempts"] == "3"
    assert "amount" in headers["shopmesh-error"]
    assert json.loads(dead[0].value)["id"] == poison["id"]
    wait_for(
        lambda: prometheus_query(mesh, dlq) > dead_lettered_before,
        timeout=30,
        what="the workers' DLQ counter to count the poison task in Prometheus",
    )
