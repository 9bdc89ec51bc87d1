"""Network faults between the hosts of the hosts placement (docs/hosts.md, "The checker"), each
with the chaos suite's accounting: orders through the balancer at a steady rate
(tests/chaos/order_load.py) and acks=all messages to a topic of the test's own while the fault
lasts; then the fault is healed and the checker looks:

- the orders: every one accepted (201) ends PAID, charged once (one payment, one
  PaymentSucceeded event), none lost; the client-visible errors (5xx, no answer) are counted,
  not asserted: a fault may cost some;
- Kafka's view: every message a broker acknowledged (acks=all, min ISR 2) is read back; every
  partition fully replicated; the payment workers' consumer group has both members again;
- Consul's view: a leader and every server a healthy voter; the catalog converged (every
  instance's checks passing, seen through an agent);
- the recovery time: from the heal until the last client-visible error and the views above all
  whole again. Measured and reported, not asserted.

Each fault's figures go into `<state dir>/network-faults.md` (fault | accepted | errors | lost |
double | recovery | Kafka acked | Kafka lost), printed at the end of the module. Needs root; the
mesh is tests/conftest.py's `hosts_mesh`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

import pytest
from aiokafka.structs import RecordMetadata

from mesh.components import kafka as kafka_config
from mesh.placement import HostsPlacement, consul_agent_on
from mesh.runtime import consul, demo, kafka, netfaults, users, watchdog
from mesh.runtime.hosts import Network
from mesh.runtime.supervisor import Mesh
from tests.chaos.order_load import Answers, OrderLoad
from tests.integration.test_kafka_cluster import _producer, consume_all
from tests.integration.test_messaging_flow import order_statuses, payments_by_order, query
from tests.support import FreshClient, edge_client, wait_for

# The host the host faults hit: a Consul server, a Kafka broker, an edge and instances of most
# services run there; the watchdog, Prometheus and the Postgres nodes do not.
HOST = "host-3"
BEFORE_S, FAULT_S, AFTER_S = 5.0, 20.0, 10.0
# 10 orders a second for 35 s over 10 users: 35 each, within the edge's 100 a minute.
USERS_PER_FAULT = 10
PROBE_INTERVAL_S = 0.05
# Each fault's own waits are bounded (the views before, the heal's starts, the views after,
# the orders PAID): the whole test above pytest's default 300 s, which a lost host's restart
# on a busy machine alone can take.
pytestmark = pytest.mark.timeout(1500)

PAID_WITHIN_S = 180.0
VIEWS_WHOLE_WITHIN_S = 180.0
RESULTS = "network-faults.md"
HEADER = (
    "| fault | accepted | errors | lost | double | recovery | Kafka acked | Kafka lost |\n"
    "|---|---|---|---|---|---|---|---|\n"
)


@dataclass(frozen=True)
class Fault:
    name: str
    start: Callable[[Mesh, Network], object]
    heal: Callable[[Mesh, Network], object]


def lose_host(mesh: Mesh, network: Network) -> None:
    """Every process of the host SIGKILLed at once, kept down (the watchdog would restart them
    within a second) until the heal brings the host back."""
    for name in mesh.resolve(HOST):
        watchdog.hold(mesh.state, name)
    netfaults.kill_host(network, HOST)


def bring_back_host(mesh: Mesh, network: Network) -> None:
    mesh.start(HOST, say=lambda _: None)


def heal(mesh: Mesh, network: Network) -> None:
    netfaults.heal(network)


FAULTS = [
    Fault(f"{HOST} lost (every process SIGKILLed)", lose_host, bring_back_host),
    Fault(
        f"{HOST} partitioned from the others, both ways",
        lambda _, network: netfaults.partition(network, HOST),
        heal,
    ),
    Fault(
        f"{HOST} partitioned one way (what it sends is lost)",
        lambda _, network: netfaults.partition(network, HOST, one_way=True),
        heal,
    ),
    Fault("2 % loss between every two hosts", lambda _, n: netfaults.set_loss(n, 2.0), heal),
    Fault(
        "50 ± 10 ms delay between every two hosts",
        lambda _, n: netfaults.set_delay(n, 50, 10),
        heal,
    ),
]


@pytest.fixture(scope="module")
def network(hosts_mesh: Mesh) -> Network:
    assert hosts_mesh.network is not None
    return hosts_mesh.network


@pytest.fixture(scope="module")
def probe_topic(hosts_mesh: Mesh) -> str:
    """A topic of the module's own, RF 3 and min ISR 2 as the mesh's."""
    name = f"test.network-faults.{uuid.uuid4().hex[:8]}"
    spec = kafka_config.TopicSpec(name, partitions=3, replication_factor=3, min_insync_replicas=2)
    kafka.ensure_topics(hosts_mesh.topology, hosts_mesh.placement, hosts_mesh.state, (spec,))
    return name


@pytest.fixture(scope="module")
def results(hosts_mesh: Mesh) -> Iterator[list[str]]:
    rows: list[str] = []
    yield rows
    print(f"\n{HEADER}{''.join(rows)}", flush=True)


def fresh_clients(mesh: Mesh, count: int) -> list[FreshClient]:
    """Users of their own (the edge limits each to 100 requests a minute), through the
    balancer of the hosts placement, each with a token taken once (it lasts 15 minutes)."""
    t, s, placement = mesh.topology, mesh.state, mesh.placement
    made = users.create_users(t, s, count, prefix="netfault", placement=placement)
    return [
        FreshClient(user, edge_client(t, demo.token(t, s, user, placement), placement))
        for user in made
    ]


class KafkaProbe:
    """Numbered messages to `topic` with acks=all, one every PROBE_INTERVAL_S from start to
    stop, from this namespace (which every host reaches: the faults are between hosts); what
    the brokers acknowledged, and what failed."""

    def __init__(self, mesh: Mesh, topic: str) -> None:
        self._bootstrap = mesh.placement.kafka_bootstrap(mesh.topology)
        self._state = mesh.state
        self._topic = topic
        self._stopping = threading.Event()
        self.acked: set[bytes] = set()
        self.failed = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> KafkaProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    async def _run(self) -> None:
        producer = _producer(self._bootstrap, self._state)
        await producer.start()
        sent: list[tuple[bytes, asyncio.Future[RecordMetadata]]] = []
        try:
            number = 0
            while not self._stopping.is_set():
                value = f"{uuid.uuid4().hex}-{number}".encode()
                sent.append((value, await producer.send(self._topic, value)))
                number += 1
                await asyncio.sleep(PROBE_INTERVAL_S)
            outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        finally:
            await producer.stop()
        for (value, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.failed += 1
            else:
                self.acked.add(value)


def consul_view(mesh: Mesh) -> str | None:
    """None when Consul is whole: a leader, every server a healthy voter, and every instance
    of every service passing its checks (its node's included) in the catalog, as host-1's
    agent sees it; else what is not yet."""
    health = consul.cluster_health(mesh.topology, mesh.placement, mesh.state, mesh.on_host)
    if not health.startswith("ok,"):
        return f"consul servers: {health}"
    agent = consul_agent_on(mesh.topology.hosts.apps[0].name)
    addr = mesh.placement.consul_http_addr(mesh.topology, agent)
    with consul.operator_client(addr, mesh.state) as client:
        for service in mesh.topology.services:
            ask = partial(client.http.get, f"/v1/health/service/{service.name}")
            entries = mesh.on_host(agent, ask).json()
            passing = {
                entry["Service"]["ID"]
                for entry in entries
                if all(check["Status"] == "passing" for check in entry["Checks"])
            }
            wanted = {instance.id for instance in service.instances}
            if passing != wanted:
                return f"consul catalog: {service.name} passing on {sorted(passing)}"
    return None


def kafka_view(mesh: Mesh) -> str | None:
    """None when Kafka is whole: every partition fully replicated, and each worker group has
    all its members; else what is not yet."""
    t, p, s = mesh.topology, mesh.placement, mesh.state
    health = kafka.cluster_health(t, p, s)
    if not health.startswith("ok"):
        return f"kafka: {health}"
    for workers in t.workers:
        members = set(kafka.group_client_ids(t, p, s, workers.group))
        if members != set(workers.instances):
            return f"kafka: {workers.group} has members {sorted(members)}"
    return None


def views_whole(mesh: Mesh) -> str | None:
    return consul_view(mesh) or kafka_view(mesh)


class ViewsSince:
    """The views polled from `healed_at` on, remembering how long after it each kind of view
    (Consul's servers, Consul's catalog, Kafka) was last seen not whole."""

    def __init__(self, mesh: Mesh, healed_at: float) -> None:
        self.mesh = mesh
        self.healed_at = healed_at
        self.last_not_whole: dict[str, float] = {}

    def whole(self) -> bool:
        reason = views_whole(self.mesh)
        if reason is not None:
            self.last_not_whole[reason.split(":")[0]] = time.monotonic() - self.healed_at
        return reason is None

    def account(self, heal_s: float) -> str:
        """E.g. "the heal 41.0 s; not whole until 80.2 s: kafka, 60.3 s: consul catalog"."""
        latest_first = sorted(self.last_not_whole.items(), key=lambda item: -item[1])
        views = ", ".join(f"{at:.1f} s: {view}" for view, at in latest_first)
        return f"the heal {heal_s:.1f} s" + (f"; not whole until {views}" if views else "")


def orders_outcome(mesh: Mesh, answers: Answers) -> tuple[int, int]:
    """(lost, double) of the accepted orders, once every one is PAID or PAID_WITHIN_S passed:
    lost, an accepted order not PAID (missing, or stuck); double, one with more than one
    payment or more than one PaymentSucceeded event."""
    ids = answers.order_ids

    def all_paid() -> bool:
        statuses = order_statuses(mesh, ids)
        return len(statuses) == len(ids) and set(statuses.values()) <= {"PAID"}

    with suppress(AssertionError):  # what is not PAID by then is counted as lost below
        wait_for(all_paid, timeout=PAID_WITHIN_S, what="every accepted order PAID", interval=1)
    statuses = order_statuses(mesh, ids)
    lost = sum(1 for order in ids if statuses.get(order) != "PAID")
    payments = payments_by_order(mesh, ids)
    events = query(
        mesh,
        "payments",
        "SELECT key, count(*) AS n FROM outbox WHERE key = ANY($1::text[]) "
        "AND payload->>'type' = 'shopmesh.payment.succeeded.v1' GROUP BY key",
        ids,
    )
    doubled = {order for order, rows in payments.items() if len(rows) > 1}
    doubled |= {row["key"] for row in events if row["n"] > 1}
    return lost, len(doubled)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name.split(" (")[0])
def test_every_accepted_order_is_paid_once_and_the_views_are_whole_after_the_fault(
    hosts_mesh: Mesh, network: Network, probe_topic: str, results: list[str], fault: Fault
) -> None:
    assert isinstance(hosts_mesh.placement, HostsPlacement)
    wait_for(
        lambda: views_whole(hosts_mesh) is None,
        timeout=VIEWS_WHOLE_WITHIN_S,
        what="the mesh whole before the fault",
        interval=1,
    )
    clients = fresh_clients(hosts_mesh, USERS_PER_FAULT)
    try:
        with KafkaProbe(hosts_mesh, probe_topic) as probe, OrderLoad(clients) as load:
            time.sleep(BEFORE_S)  # the load's steady state before the fault: its pace, not a wait
            fault.start(hosts_mesh, network)
            time.sleep(FAULT_S)  # the fault lasting: traffic flows through it meanwhile
            healed_at = time.monotonic()
            fault.heal(hosts_mesh, network)
            heal_s = time.monotonic() - healed_at
            # The views polled from the heal on, with the load still flowing.
            views = ViewsSince(hosts_mesh, healed_at)
            try:
                wait_for(views.whole, timeout=VIEWS_WHOLE_WITHIN_S,
                         what="Consul's and Kafka's views whole", interval=0.5)  # fmt: skip
                not_whole = None
            except AssertionError as exc:
                not_whole = str(exc)
            whole_at = time.monotonic()
            time.sleep(max(0.0, healed_at + AFTER_S - whole_at))  # AFTER_S of traffic at least
            answers = load.stop()
    finally:
        # Whatever happened above, the next fault starts from a whole mesh: the links healed,
        # and whatever of the host is down started again (`start` skips what runs).
        heal(hosts_mesh, network)
        bring_back_host(hosts_mesh, network)
        for client in clients:
            client.http.close()
    last_error = max((t for t in answers.error_times if t > healed_at), default=healed_at)
    recovery = f"{max(last_error, whole_at) - healed_at:.1f} s ({views.account(heal_s)})"
    if not_whole:
        recovery = f"not whole within {VIEWS_WHOLE_WITHIN_S:.0f} s: {views_whole(hosts_mesh)}"
    lost, double = orders_outcome(hosts_mesh, answers)
    read_back = {
        value
        for _, value in consume_all(
            hosts_mesh.topology, hosts_mesh.state, probe_topic, hosts_mesh.placement
        )
    }
    kafka_lost = len(probe.acked - read_back)
    accepted = len(answers.order_ids)
    row = (
        f"| {fault.name} | {accepted} of {answers.total} | {answers.errors} | {lost} | {double} "
        f"| {recovery} | {len(probe.acked)} | {kafka_lost} |\n"
    )
    results.append(row)
    path = hosts_mesh.state.root / RESULTS
    path.write_text(HEADER + "".join(results))
    print(f"\n{fault.name}: {answers.summary()}; {row}", flush=True)
    assert accepted, answers.summary()
    assert probe.acked, f"no probe message acknowledged ({probe.failed} failed)"
    assert (lost, double, kafka_lost) == (0, 0, 0), row
    assert not_whole is None, row
