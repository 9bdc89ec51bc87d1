"""Producer → 3 brokers → consumer: throughput, end-to-end latency and lost messages.

Runs against the native mesh's Kafka (start it with `mesh up -d`) as the admin principal (of
the mesh whose state dir SHOPMESH_STATE_DIR names), on a scratch topic with the
project's settings (replication factor 3, min.insync.replicas 2; producer acks=all with
idempotence), deleted afterwards. Writes the figures and this command to docs/benchmarks.md.

    .venv/bin/python bench/kafka_pipeline.py [--messages 20000] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime
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


def row(result: dict[str, Any]) -> str:
    return (
        f"| {datetime.now(UTC):%Y-%m-%d} | {result['messages']} x {result['size']} B, "
        f"{result['partitions']} partitions | {result['produce_rate']:,.0f} msg/s | "
        f"{result['end_to_end_rate']:,.0f} msg/s | {result['p50_ms']:.1f} ms | "
        f"{result['p99_ms']:.1f} ms | {result['lost']} |"
    )


def add_row(text: str, section: str, new_row: str) -> str | None:
    """The text with `new_row` after the last row of the first table under `section`; None if
    the section has no table."""
    lines = text.splitlines()
    if section not in lines:
        return None
    start = lines.index(section)
    rows = [n for n in range(start + 1, len(lines)) if lines[n].startswith("|")]
    if not rows:
        return None
    last = rows[0]
    while last + 1 < len(lines) and lines[last + 1].startswith("|"):
        last += 1
    return "\n".join([*lines[: last + 1], new_row, *lines[last + 1 :]]) + "\n"


def record(result: dict[str, Any], command: str) -> None:
    """Adds the run as a row of this section's table (`make bench` rewrites the whole file)."""
    header = (
        f"{SECTION}\n\nProducer (acks=all, idempotent) → 3 KRaft brokers (RF 3, min ISR 2) → "
        "consumer, on one 2-core machine with the whole mesh running. Command: "
        f"`{command}` ({platform.python_implementation()} {platform.python_version()}, "
        "aiokafka 0.14, Kafka 3.9.2).\n\n"
        "| date | load | produced (acked) | end to end | p50 latency | p99 latency | lost |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    updated = add_row(text, SECTION, row(result))
    if updated is None:
        updated = text.rstrip() + "\n\n" + header + row(result) + "\n"
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.size, args.partitions))
    print(json.dumps(result, indent=2))
    command = "python bench/kafka_pipeline.py"
    if (args.messages, args.size, args.partitions) != (20000, 512, 6):
        command += f" --messages {args.messages} --size {args.size} --partitions {args.partitions}"
    record(result, command)


if __name__ == "__main__":
    main()
