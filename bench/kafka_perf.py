"""Kafka's own producer and consumer performance tools (`mesh kafka producer-perf-test`,
`consumer-perf-test`) on the same cluster and topic settings as bench/kafka_pipeline.py: a
scratch topic with its partitions, replication factor 3 and min.insync.replicas 2, a producer
with the services' settings (acks=all, idempotence, linger, batch size), records of the same
size."""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Any

from services.common.messaging.producer import PRODUCER_DEFAULTS

MESH = ".venv/bin/mesh"
PRODUCER_LINE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec .*?, ([\d.]+) ms avg latency, ([\d.]+) ms max "
    r"latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th"
)


# The services' producer settings that shape a run, by their names in Kafka's Java client.
JAVA_PRODUCER_NAMES = {
    "acks": "acks",
    "enable_idempotence": "enable.idempotence",
    "linger_ms": "linger.ms",
    "max_batch_size": "batch.size",
}


def producer_props() -> list[str]:
    """The services' producer settings as producer-perf-test's `--producer-props`."""
    props = []
    for name, java_name in JAVA_PRODUCER_NAMES.items():
        value = PRODUCER_DEFAULTS[name]
        props.append(f"{java_name}={str(value).lower() if isinstance(value, bool) else value}")
    return props


def kafka(tool: str, *args: str, timeout_s: float = 300) -> str:
    proc = subprocess.run(
        [MESH, "kafka", tool, *args], capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mesh kafka {tool} exited {proc.returncode}: {proc.stderr[-1500:]}")
    return proc.stdout


def producer_figures(output: str) -> dict[str, int | float]:
    """The summary line ProducerPerformance prints last."""
    matches = PRODUCER_LINE.findall(output)
    if not matches:
        raise ValueError(f"no producer-perf-test summary in:\n{output[-1500:]}")
    sent, rate, avg, peak, p50, p95, p99 = matches[-1]
    return {
        "records": int(sent),
        "rate": float(rate),
        "avg_ms": float(avg),
        "max_ms": float(peak),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
    }


def consumer_figures(output: str) -> dict[str, int | float]:
    """ConsumerPerformance's CSV-like header and data line."""
    lines = [line for line in output.splitlines() if line.strip()]
    (header_at,) = [n for n, line in enumerate(lines) if line.startswith("start.time")]
    names = [name.strip() for name in lines[header_at].split(",")]
    values = [value.strip() for value in lines[header_at + 1].split(",")]
    row = dict(zip(names, values, strict=True))
    return {
        "records": int(row["data.consumed.in.nMsg"]),
        "rate": float(row["nMsg.sec"]),
        "fetch_rate": float(row["fetch.nMsg.sec"]),
    }


def commands(topic: str, messages: int, size: int, partitions: int) -> dict[str, list[str]]:
    """The tools' arguments, as the report prints them."""
    return {
        "create": ["topics", "--create", "--topic", topic, "--partitions", str(partitions),
                   "--replication-factor", "3", "--config", "min.insync.replicas=2"],
        "produce": ["producer-perf-test", "--topic", topic, "--num-records", str(messages),
                    "--record-size", str(size), "--throughput", "-1", "--producer-props",
                    *producer_props()],
        "consume": ["consumer-perf-test", "--topic", topic, "--messages", str(messages),
                    "--group", f"{topic}-group", "--timeout", "60000"],
        "delete": ["topics", "--delete", "--topic", topic],
    }  # fmt: skip


def run(messages: int, size: int, partitions: int) -> dict[str, Any]:
    topic = f"bench-perf-{uuid.uuid4().hex[:8]}"
    steps = commands(topic, messages, size, partitions)
    kafka(*steps["create"])
    try:
        produced = producer_figures(kafka(*steps["produce"]))
        consumed = consumer_figures(kafka(*steps["consume"]))
    finally:
        kafka(*steps["delete"])
    return {"producer": produced, "consumer": consumed, "commands": steps}
