"""Prometheus scrapes every service and sidecar (found through Consul), the workers, the edge,
Consul's agent and servers and every Kafka node's JMX exporter, and the metrics move with
traffic."""

from __future__ import annotations

import json
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from mesh.components import prometheus as prometheus_config
from mesh.placement import NativePlacement
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology
from tests.support import wait_for

ORDER = {"userId": "alice", "items": [{"productId": "book", "quantity": 1}]}


def prometheus(mesh: Mesh) -> httpx.Client:
    base = f"http://{mesh.topology.bind_host}:{mesh.topology.prometheus_port}"
    return httpx.Client(base_url=base, timeout=5.0)


def samples(mesh: Mesh, promql: str) -> list[dict]:
    """The instant vector Prometheus answers `promql` with."""
    with prometheus(mesh) as client:
        return client.get("/api/v1/query", params={"query": promql}).json()["data"]["result"]


def query(mesh: Mesh, promql: str) -> float:
    return sum(float(sample["value"][1]) for sample in samples(mesh, promql))


def up_targets(mesh: Mesh) -> set[tuple[str, str]]:
    """(job, instance) of every target Prometheus scrapes successfully."""
    with prometheus(mesh) as client:
        targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]) for t in targets if t["health"] == "up"}


def test_every_target_is_discovered_scraped_and_up(mesh: Mesh) -> None:
    topology = mesh.topology
    expected = {("services", i.id) for i in topology.instances()}
    expected |= {("services", name) for w in topology.workers for name in w.instances}
    expected |= {("envoy", f"{i.id}-sidecar") for i in topology.instances()}
    for edge in topology.edge.instances:
        expected |= {("envoy", f"{edge.id}-sidecar"), ("edge", edge.id)}
    expected.add(("balancer", "balancer"))
    expected |= {("kafka", node.name) for node in topology.kafka.nodes}
    expected.add(("consul", "consul"))
    expected |= {("consul", server.name) for server in topology.consul_servers}

    up = wait_for(
        lambda: expected <= up_targets(mesh) and up_targets(mesh),
        timeout=60,
        what="every service, worker, sidecar, edge, the balancer, Consul's agent and servers and "
        "each Kafka node to be up",
    )
    assert expected <= up
    # The services and sidecars came from Consul's catalog (file_sd written by consul-sd).
    with prometheus(mesh) as client:
        targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
    discovered = {t["labels"]["instance"] for t in targets
                  if t["discoveredLabels"].get("__meta_filepath")}  # fmt: skip
    assert {i.id for i in topology.instances()} <= discovered
    assert {f"{i.id}-sidecar" for i in topology.instances()} <= discovered


def test_kafka_brokers_report_replication_and_the_controller(mesh: Mesh) -> None:
    nodes = len(mesh.topology.kafka.nodes)
    wait_for(
        lambda: (
            query(mesh, "count(kafka_server_replicamanager_underreplicatedpartitions)") == nodes
        ),
        timeout=30,
        what="every Kafka node's under-replicated partition count in Prometheus",
    )
    assert query(mesh, "sum(kafka_server_replicamanager_partitioncount)") > 0
    wait_for(
        lambda: query(mesh, "sum(kafka_controller_kafkacontroller_activecontrollercount)") == 1,
        timeout=30,
        what="exactly one active Kafka controller in Prometheus",
    )


def test_request_metrics_move_with_traffic(mesh: Mesh, edge: httpx.Client) -> None:
    orders = 'sum(shopmesh_requests_total{service="orders", route="/orders", method="POST"})'
    payments = 'sum(shopmesh_requests_total{service="payments", status="OK"})'
    gateway = 'sum(envoy_http_downstream_rq_total{job="edge"})'
    before = {name: query(mesh, promql) for name, promql in
              {"orders": orders, "payments": payments, "gateway": gateway}.items()}  # fmt: skip

    resp = edge.post("/orders", json={"userId": "alice",
                                      "items": [{"productId": "book", "quantity": 1}]})  # fmt: skip
    assert resp.status_code == 201

    wait_for(lambda: query(mesh, orders) > before["orders"], timeout=30,
             what="orders' request counter to rise in Prometheus")  # fmt: skip
    wait_for(lambda: query(mesh, payments) > before["payments"], timeout=30,
             what="payments' OK counter to rise in Prometheus")  # fmt: skip
    wait_for(lambda: query(mesh, gateway) > before["gateway"], timeout=30,
             what="the edge's request counter to rise in Prometheus")  # fmt: skip


def _kept_series(exposition: str) -> set[str]:
    """Each sample line's series (its name and labels, without the value) that Prometheus keeps
    from a sidecar, by the names as Prometheus reads them."""
    (keep,) = prometheus_config.SIDECAR_METRICS_READ
    kept = re.compile(keep["regex"])
    lines = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0] for line in lines if kept.fullmatch(re.split(r"[{ ]", line)[0])}


def test_the_sidecars_stats_filter_drops_nothing_prometheus_keeps(mesh: Mesh) -> None:
    placement = NativePlacement.of(mesh.topology)
    sidecars = [(i.id, i.sidecar.metrics_port) for i in mesh.topology.instances()]
    sidecars += [(edge.id, edge.sidecar.metrics_port) for edge in mesh.topology.edge.instances]
    for owner, port in sidecars:
        url = f"http://{placement.address(owner)}:{port}/metrics"
        everything = httpx.get(url, timeout=10.0)
        filtered = httpx.get(
            url, params={"filter": prometheus_config.SIDECAR_STATS_FILTER}, timeout=10.0
        )
        assert everything.status_code == filtered.status_code == 200, owner
        assert len(filtered.content) < len(everything.content) / 5, owner
        kept = _kept_series(everything.text)
        assert kept, f"{owner}-sidecar exported nothing Prometheus keeps"
        assert kept <= _kept_series(filtered.text), owner


def test_the_alert_and_recording_rules_are_loaded(mesh: Mesh) -> None:
    with prometheus(mesh) as client:
        groups = client.get("/api/v1/rules").json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"GatewayLatencyHigh", "GatewayErrorRateHigh", "InstanceDown", "KafkaConsumerLagHigh",
            "KafkaMessageAgeHigh", "DeadLetterQueueGrowing", "OutboxBacklogOld",
            "KafkaUnderReplicatedPartitions", "KafkaOfflinePartitions"} <= names  # fmt: skip
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_a_queued_order_moves_the_kafka_counters_and_the_message_age(
    mesh: Mesh, edge: httpx.Client
) -> None:
    counters = {
        "orders' relay to publish the payment task":
            'shopmesh_kafka_messages_produced_total{service="orders", topic="payment-tasks"}',
        "a payment worker to handle the task":
            'shopmesh_kafka_messages_consumed_total{service="payments-worker", '
            'topic="payment-tasks", outcome="ok"}',
        "orders to handle the payment outcome":
            'shopmesh_kafka_messages_consumed_total{service="orders", topic="payment-events", '
            'outcome="ok"}',
        "orders to observe the outcome event's age":
            'shopmesh_kafka_message_age_seconds_count{service="orders", topic="payment-events"}',
    }  # fmt: skip
    relays = len(mesh.topology.service("orders").instances)
    wait_for(lambda: query(mesh, 'count(shopmesh_outbox_backlog{service="orders"})') == relays,
             timeout=30, what="each orders relay's outbox backlog gauge in Prometheus")  # fmt: skip
    before = {what: query(mesh, f"sum({metric})") for what, metric in counters.items()}

    resp = edge.post("/orders", json=ORDER, headers={"Prefer": "respond-async"})
    assert resp.status_code == 202, resp.text

    for what, metric in counters.items():
        wait_for(lambda m=metric, w=what: query(mesh, f"sum({m})") > before[w], timeout=30,
                 what=f"{what} (in Prometheus)")  # fmt: skip
    assert query(mesh, 'max(shopmesh_outbox_oldest_age_seconds{service="orders"})') < 30
    lag = 'count(shopmesh_kafka_consumer_lag{service="payments-worker", group="payment-workers"})'
    wait_for(lambda: query(mesh, lag) > 0, timeout=30,
             what="the payment workers' lag per partition in Prometheus")  # fmt: skip


def ws_url(topology: Topology, token: str) -> str:
    return (
        f"ws://{topology.bind_host}:{topology.edge.http_port}/notifications/ws?access_token={token}"
    )


def own_websocket_gauges(mesh: Mesh) -> dict[str, float]:
    """Each notifications instance's open sockets as the instance counts them (its /metrics)."""
    gauges = {}
    for instance in mesh.topology.service("notifications").instances:
        url = f"http://{mesh.topology.bind_host}:{instance.metrics_port}/metrics"
        families = text_string_to_metric_families(httpx.get(url, timeout=5.0).text)
        gauges[instance.id] = next(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "shopmesh_websocket_connections"
        )
    return gauges


def scraped_websocket_gauges(mesh: Mesh) -> dict[str, float]:
    """Each notifications instance's open sockets as Prometheus last scraped them."""
    result = samples(mesh, 'shopmesh_websocket_connections{service="notifications"}')
    return {sample["metric"]["instance"]: float(sample["value"][1]) for sample in result}


def test_the_websocket_gauge_counts_a_connected_client(mesh: Mesh, tokens) -> None:
    def settled() -> tuple[float, ...]:
        """The open sockets as Prometheus counts them, once it agrees with every instance's own
        count (no scrape lagging behind an earlier socket's close)."""
        scraped = scraped_websocket_gauges(mesh)
        return (sum(scraped.values()),) if scraped == own_websocket_gauges(mesh) else ()

    (before,) = wait_for(settled, timeout=30, what="Prometheus to scrape every notifications "
                         "instance's WebSocket gauge as the instance counts it")  # fmt: skip
    with connect(ws_url(mesh.topology, tokens.external("alice")), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        try:
            wait_for(lambda: settled() == (before + 1,), timeout=30, interval=0.5,
                     what="the WebSocket connection gauge to count the open socket")  # fmt: skip
        except AssertionError as failure:
            raise AssertionError(
                f"{failure}; before: {before}, the instances count "
                f"{own_websocket_gauges(mesh)}, Prometheus {scraped_websocket_gauges(mesh)}, "
                f"the socket is {ws.state.name}"
            ) from None
        assert ws.ping().wait(timeout=10), "the socket closed while it was being counted"
    wait_for(lambda: settled() == (before,), timeout=30, interval=0.5,
             what="the WebSocket connection gauge to drop once the socket closed")  # fmt: skip
    instances = len(mesh.topology.service("notifications").instances)
    depths = 'count(shopmesh_websocket_queue_depth{service="notifications"})'
    assert query(mesh, depths) == instances
