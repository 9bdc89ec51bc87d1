"""Producer → 3 brokers → consumer: throughput, end-to-end latency and lost messages.

Runs against the native mesh's Kafka (start it with `mesh up -d`) as the admin principal (of
the mesh whose state dir SHOPMESH_STATE_DIR names), on a scratch topic with the
project's settings (replication factor 3, min.insync.replicas 2) and the services' producer
(services/common/messaging/producer.py: acks=all, idempotence, its linger and batch size),
deleted afterwards. Prints the figures as JSON; `make bench` puts them in
docs/benchmarks.md.

    .venv/bin/python -m bench.kafka_pipeline [--messages 20000] [--size 512] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.kafka_perf import producer_props
from mesh.components.kafka_auth import admin_options
from mesh.runtime.paths import StateDir
from mesh.topology import load
from services.common.messaging.producer import create_producer

# How long the warm-up may take: the consumer's group join, the leaders of the new topic.
CONSUMER_READY_S = 60.0
WARM_UP = b'{"warm_up": true}'
# While paced, the producer sends every message that is due, then looks again after this long.
PACING_TICK_S = 0.002


async def warm_up(
    producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str, partitions: int
) -> None:
    """One message to each partition, acknowledged and consumed, before the measured ones: the
    producer has met every leader of the new topic and the consumer has joined its group and
    reads every partition. Without it the first messages waited ~1 s for those, which made
    most of a 10 s run's p99."""
    for partition in range(partitions):
        await producer.send_and_wait(topic, WARM_UP, partition=partition)
    deadline = time.monotonic() + CONSUMER_READY_S
    consumed = 0
    while consumed < partitions:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{consumed} of {partitions} warm-up messages consumed in "
                               f"{CONSUMER_READY_S:.0f} s")  # fmt: skip
        batch = await consumer.getmany(timeout_ms=100)
        consumed += sum(len(records) for records in batch.values())


async def run(
    messages: int, size: int, partitions: int, rate: float | None = None
) -> dict[str, Any]:
    """`messages` through a scratch topic: as fast as the producer goes (`rate` None: the
    ceiling), or at `rate` a second (open model: each message is stamped with the time it was
    due, so a producer that falls behind shows its backlog in the latencies)."""
    bootstrap = load().kafka_bootstrap()
    sign_in = admin_options(StateDir.default())
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **sign_in)
    await admin.start()
    await admin.create_topics(
        [NewTopic(topic, partitions, 3, topic_configs={"min.insync.replicas": "2"})]
    )
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-group",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **sign_in)  # fmt: skip
    producer = create_producer(bootstrap.split(","), security=sign_in)
    await consumer.start()
    await producer.start()
    await warm_up(producer, consumer, topic, partitions)
    latencies: list[float] = []
    seen: set[int] = set()
    padding = "x" * max(size - 64, 0)

    async def consume() -> None:
        while len(seen) < messages:
            batch = await consumer.getmany(timeout_ms=1000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    # Only this producer writes the scratch topic, every message with a value.
                    assert record.value is not None
                    body = json.loads(record.value)
                    seen.add(body["n"])
                    latencies.append(now - body["sent"])

    acks: list[asyncio.Future[Any]] = []

    async def send(n: int, stamp: float) -> None:
        value = json.dumps({"n": n, "sent": stamp, "pad": padding}).encode()
        acks.append(await producer.send(topic, value, key=str(n % 64).encode()))

    try:
        consuming = asyncio.create_task(consume())
        started, began = time.perf_counter(), time.time()
        if rate is None:
            for n in range(messages):
                await send(n, time.time())
        else:
            n = 0
            while n < messages:
                due = min(messages, int((time.time() - began) * rate) + 1)
                for m in range(n, due):
                    await send(m, began + m / rate)
                n = due
                await asyncio.sleep(PACING_TICK_S)
        sent_s = time.perf_counter() - started
        await asyncio.gather(*acks)
        produced_s = time.perf_counter() - started
        await asyncio.wait_for(consuming, timeout=120)
        total_s = time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    latencies.sort()
    return {
        "messages": messages,
        "size": size,
        "partitions": partitions,
        "offered_rate": rate,
        "send_rate": messages / sent_s,
        "produce_rate": messages / produced_s,
        "end_to_end_rate": messages / total_s,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "lost": messages - len(seen),
        "producer_settings": producer_props(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, help="messages a second (default: the ceiling)")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.size, args.partitions, args.rate))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
