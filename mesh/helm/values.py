"""The chart's values: the images, and the sizes a cluster chooses (replicas, requests and
limits, storage). values.yaml is the small cluster's; values-large.yaml overrides it.

Figures from `make bench` of commit df6d3c9 (`git show df6d3c9:docs/benchmarks.md`,
"Resources", "Where a request spends its CPU"): one of each instance on the native mesh. Later
runs have two of each on the same two cores, which says less about one process alone. Memory
requests are a process's PSS after the load run rounded up, limits twice that; CPU requests are
the measured CPU per request times the rate each size is meant for (small: ~100 req/s, large:
1000 req/s through the edge, the brief's figure), spread over the replicas. The sidecars
consul-k8s injects are sized by consul-k8s's own settings.
"""

from __future__ import annotations

from typing import Any

from mesh.components.kafka import load_topics
from mesh.components.kafka_acl import load_clients
from mesh.compose.document import IMAGES, SERVICE_IMAGE
from mesh.placement import JAEGER
from mesh.topology import Topology

# PSS after the load, MB (df6d3c9's "Resources"; payments-worker and payments from
# their instances, the edge from `edge`).
MEASURED_MB = {
    "orders": 187,
    "auth": 128,
    "users": 59,
    "payments": 57,
    "notifications": 59,
    "payments-worker": 54,
    "edge": 273,
    "kafka": 567,
    "postgres": 271,
}
# What no bench run has measured yet (web, Jaeger in the chart) gets the largest Python
# service's figure but orders': a guess until `make bench` reports it.
UNMEASURED_MB = 128
# CPU ms per GET through the edge at 500 req/s (df6d3c9's "Where a request spends its
# CPU"); the others, not on that path, get the smallest request below.
MEASURED_CPU_MS = {"edge": 0.64, "orders": 0.60, "auth": 0.08, "users": 0.07}
MIN_CPU_M = 50
# The HPA's ceiling, as a multiple of a size's replicas: a guess, not a measured figure (a
# worker's is also at most the partitions it reads).
MAX_REPLICAS = 4
# A placeholder: an install names its own (`--set publicHost=shop.example.org`).
PUBLIC_HOST = "shopmesh.example.com"
SIZES = {"small": {"rate": 100, "replicas": 1}, "large": {"rate": 1000, "replicas": 3}}


def _fewest_partitions_read(principal: str) -> int:
    """The fewest partitions among the topics a worker reads: more replicas than that idle."""
    partitions = {topic.name: topic.partitions for topic in load_topics()}
    (client,) = (c for c in load_clients() if c.principal == principal)
    return min(partitions[topic] for topic in client.consumes)


def _mebibytes(mb: int) -> int:
    # Up to the next 32 Mi.
    mib = mb * 1_000_000 / 2**20
    return int(-(-mib // 32) * 32)


def _resources(name: str, rate: int, replicas: int) -> dict[str, Any]:
    memory = _mebibytes(MEASURED_MB.get(name, UNMEASURED_MB))
    cpu = max(MIN_CPU_M, int(MEASURED_CPU_MS.get(name, 0) * rate / replicas))
    return {
        "requests": {"cpu": f"{cpu}m", "memory": f"{memory}Mi"},
        "limits": {"memory": f"{2 * memory}Mi"},
    }


def _kafka(topology: Topology, size: str) -> dict[str, Any]:
    """The brokers: the topology's three with its heap on a small cluster; five with 1 GiB
    heaps on a large one. Memory: the measured PSS, at least twice the heap."""
    nodes, heap = (len(topology.kafka.nodes), topology.kafka.heap) if size == "small" else (5, "1g")
    heap_mib = int(heap[:-1]) * (1024 if heap[-1] in "gG" else 1)
    memory = max(_mebibytes(MEASURED_MB["kafka"]), 2 * heap_mib)
    return {
        # Strimzi 0.45's newest Kafka (the native runtime runs 3.9.2).
        "version": "3.9.0",
        "replicas": nodes,
        "heap": heap,
        "storage": "10Gi" if size == "small" else "100Gi",
        "resources": {
            "requests": {"cpu": "100m" if size == "small" else "500m", "memory": f"{memory}Mi"},
            "limits": {"memory": f"{2 * memory}Mi"},
        },
    }


def values(topology: Topology, size: str) -> dict[str, Any]:
    rate, replicas = SIZES[size]["rate"], SIZES[size]["replicas"]
    workloads: dict[str, dict[str, Any]] = {
        s.name: {
            "replicas": replicas,
            "maxReplicas": MAX_REPLICAS * replicas,
            "resources": _resources(s.name, rate, replicas),
        }
        for s in topology.services
    }
    for w in topology.workers:
        workloads[w.name] = {
            "replicas": replicas,
            "maxReplicas": min(MAX_REPLICAS * replicas, _fewest_partitions_read(w.name)),
            "resources": _resources(w.name, rate, replicas),
        }
    # Never one edge: the LoadBalancer needs another while one is replaced.
    edge_replicas = max(replicas, 2)
    workloads["edge"] = {
        "replicas": edge_replicas,
        "maxReplicas": MAX_REPLICAS * edge_replicas,
        "resources": _resources("edge", rate, edge_replicas),
    }
    # One Jaeger: it keeps its traces in its memory, so a second would hold only some of them.
    workloads[JAEGER] = {"replicas": 1, "resources": _resources(JAEGER, rate, 1)}
    return {
        # Where clients reach the edge: the tokens' issuer and the edge's certificate name it.
        "publicHost": PUBLIC_HOST,
        "image": {
            "service": SERVICE_IMAGE,
            "edge": IMAGES["envoy"],
            "postgres": IMAGES["postgres"],
            "jaeger": IMAGES["jaeger"],
        },
        "workloads": workloads,
        "kafka": _kafka(topology, size),
        "postgres": {
            "storage": "10Gi" if size == "small" else "200Gi",
            "resources": _resources("postgres", rate, 1),
        },
    }
