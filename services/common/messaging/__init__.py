"""Kafka messaging for shopmesh services (docs/messaging.md; docs/architecture.md §7 in short).

- `envelope`: CloudEvents 1.0 structured JSON values, keys, trace and DLQ headers.
- `producer`: the acks=all idempotent producer and `SHOPMESH_KAFKA_BOOTSTRAP`.
- `security`: the service's SASL/SCRAM principal (`SHOPMESH_KAFKA_USERNAME`, password file).
- `outbox`: `add()` in the state change's transaction, `OutboxRelay` publishing the rows.
- `consumer`: `ConsumerRunner`, one consumer group: fetch, hand each record on, commit.
- `processor`: `MessageProcessor`, one record: trace, idempotent handling, retries, DLQ.
- `processed`: the `processed_events` table that makes handlers idempotent.
- `migrations`: the outbox and processed_events tables, as shared migration sets.

Wiring, in a service's app.py:

    MIGRATIONS = ServiceMigrations(folder, shared=(OUTBOX, PROCESSED_EVENTS))
    await apply_migrations(pool, MIGRATIONS)          # the shared sets, then the folder
    relay = OutboxRelay(pool, lambda: create_producer(client_id="orders-1"))
    runner = ConsumerRunner(Topic.PAYMENT_EVENTS, "orders", on_payment_event, pool)
    await relay.start(); await runner.start()
    ...
    async with pool.acquire() as conn, conn.transaction():   # in a use case
        await repository.update_status(conn, order, expected)
        await outbox.add(conn, Topic.ORDER_EVENTS, order.id, order_status_changed(...))
    ...
    await runner.stop(); await relay.stop()
"""
