"""Producer → 3 brokers → consumer: throughput, end-to-end latency and lost messages.

Runs against the native mesh's Kafka (start it with `mesh up -d`) as the admin principal (of
the mesh whose state dir SHOPMESH_STATE_DIR names), on a scratch topic with the
project's settings (replication factor 3, min.insync.replicas 2; producer acks=all with
idempotence), deleted afterwards. Prints the figures as JSON; `make bench` puts them in
docs/benchmarks.md.

    .venv/bin/python bench/kafka_pipeline.py [--messages 20000] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mesh.components.kafka_auth import admin_options
from mesh.runtime.paths import StateDir
from mesh.topology import load

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Kafka pipeline"


async def run(messages: int, size: int, partitions: int) -> dict[str, Any]:
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
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5, **sign_in)  # fmt: skip
    await consumer.start()
    await producer.start()
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

    try:
        consuming = asyncio.create_task(consume())
        started = time.perf_counter()
        acks = []
        for n in range(messages):
            value = json.dumps({"n": n, "sent": time.time(), "pad": padding}).encode()
            acks.append(await producer.send(topic, value, key=str(n % 64).encode()))
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
        "produce_rate": messages / produced_s,
        "end_to_end_rate": messages / total_s,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "lost": messages - len(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.size, args.partitions))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
