"""Apache Kafka in KRaft mode as native processes: three combined broker+controller nodes, and
the mesh's topics.

Each node is a plain `java -cp <jars> kafka.Kafka server.properties` process. Its properties
(mesh/components/kafka.py) are written before every start; its log dir (`data/kafka-<id>`) is
formatted once with the cluster id, so a restarted node rejoins with its data. Topics are
created (missing ones only) once the whole cluster is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from prometheus_client.parser import text_string_to_metric_families

from mesh.components import kafka_auth
from mesh.components.kafka import (
    JMX_EXPORTER_RULES,
    TopicSpec,
    cluster_id,
    group_members,
    jmx_agent,
    load_topics,
    render_properties,
    server_properties,
)
from mesh.components.kafka_acl import acl_bindings, apply_bindings, load_clients
from mesh.placement import Placement
from mesh.runtime import kafka_credentials, process
from mesh.runtime.kafka_credentials import scram_marker
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.process import ProcessSpec
from mesh.topology import KafkaNode, Topology

# Kafka error codes the topic creation tolerates: another creator got there first.
TOPIC_ALREADY_EXISTS = 36

# Kafka's own 3.9 distribution layout, console-only: the supervisor sends stdout to the log file.
LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log.UnifiedLog=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
"""


# As Kafka's kafka-run-class.sh, but with the serial collector: on brokers this small G1's own
# structures took ~50 MB a node (NMT) and its eden touched the whole fixed heap; the serial heap
# starts at START_HEAP and grows only as far as the load takes it, up to the topology's heap.
# How far it grows: by default the young generation is a third of the heap and every collection
# of the old one leaves 40 % of it free, so after `make bench` each broker held ~150 MB of heap
# for ~75 MB in use. A young generation of at most 24 MB and 10-20 % left free keep it near what
# is in use: 72-92 MB after `make bench`, for ~370 minor collections (~12 ms each) and 11-15
# full ones (80-180 ms each) per broker over its 42 minutes (docs/performance.md, "Memory").
JVM_OPTIONS = (
    "-XX:+UseSerialGC",
    "-XX:MaxNewSize=24m",
    "-XX:MinHeapFreeRatio=10",
    "-XX:MaxHeapFreeRatio=20",
    "-Djava.awt.headless=true",
)
START_HEAP = "64m"
# A broker has ~90 threads, and glibc would give them up to 16 malloc arenas (8 a core); what the
# JVM allocates outside its heap fits in two.
JVM_ENV = {"MALLOC_ARENA_MAX": "2"}


def log_dir(state: StateDir, node: KafkaNode) -> Path:
    return state.data / node.name


def config_paths(state: StateDir, node: KafkaNode) -> tuple[Path, Path]:
    folder = state.config / "kafka"
    return folder / f"{node.name}.properties", folder / "log4j.properties"


def java_argv(
    binaries: dict[str, Path], heap: str, log4j: Path, main: str, *, agents: tuple[str, ...] = ()
) -> list[str]:
    return [
        str(binaries["java"]),
        f"-Xmx{heap}",
        f"-Xms{START_HEAP}",
        *JVM_OPTIONS,
        *agents,
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{binaries['libs']}/*",
        main,
    ]


def prepare_node(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    binaries: dict[str, Path],
    node: KafkaNode,
) -> None:
    """Write the node's configs (owner-only: they hold the broker's password); format its log
    dir the first time (kept across restarts) with every principal's SCRAM credentials. Data
    formatted without some of them gets them once the quorum runs (`node_ready`)."""
    props_path, log4j = config_paths(state, node)
    props_path.parent.mkdir(parents=True, exist_ok=True)
    log4j.write_text(LOG4J_PROPERTIES)
    logs = log_dir(state, node)
    names = principal_names()
    passwords = kafka_auth.passwords(state, names)
    props = server_properties(topology, placement, node, logs)
    write_private(
        props_path,
        render_properties(props | kafka_auth.jaas_settings(passwords[kafka_auth.BROKER])),
    )
    if formatted(state, node):
        return
    argv = java_argv(binaries, "128m", log4j, "kafka.tools.StorageTool")
    args = state.config / "kafka" / f"{node.name}-format.args"
    format_args = ["format", "-t", cluster_id(topology, state), "-c", str(props_path)]
    write_private(
        args, kafka_auth.argument_file([*format_args, *kafka_auth.scram_arguments(passwords)])
    )
    try:
        # The java launcher reads the arguments from the file: no password on a command line.
        proc = subprocess.run([*argv, f"@{args}"], capture_output=True, text=True)
    finally:
        args.unlink()
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()[-2000:]
        for password in passwords.values():
            output = output.replace(password, "***")
        raise RuntimeError(
            f"{node.name}: kafka-storage format failed (exit {proc.returncode}): {output}"
        )
    kafka_credentials.record(scram_marker(state, node), names)


def principal_names() -> tuple[str, ...]:
    return kafka_auth.principals(tuple(c.principal for c in load_clients()))


def formatted(state: StateDir, node: KafkaNode) -> bool:
    return (log_dir(state, node) / "meta.properties").exists()


def ensure_credentials(topology: Topology, placement: Placement, state: StateDir) -> str | None:
    """Every principal's SCRAM credentials in the cluster's data (kafka_credentials); None once
    they are, else why not yet."""
    markers = [scram_marker(state, n) for n in topology.kafka.nodes if formatted(state, n)]
    with _quiet_aiokafka():
        return kafka_credentials.ensure_credentials(
            topology, placement, state, principal_names(), markers
        )


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection; a readiness poll expects those."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def _metadata_from(
    host: str, port: int, topics: list[str] | None, options: dict[str, Any]
) -> dict[str, Any]:
    """A metadata response from exactly this node (topics None: every topic)."""
    conn = await create_conn(host, port, request_timeout_ms=3000, **options)
    try:
        response = await conn.send(MetadataRequest(topics, allow_auto_topic_creation=False))
        metadata: dict[str, Any] = response.to_object()
        return metadata
    finally:
        conn.close()


def metadata_from(
    placement: Placement, state: StateDir, node: KafkaNode, topics: list[str] | None = None
) -> dict[str, Any]:
    """As the admin principal (of the state dir's mesh) sees it."""
    host, options = placement.host(node.name), kafka_auth.admin_options(state)
    with _quiet_aiokafka():
        return asyncio.run(_metadata_from(host, node.port, topics, options))


def brokers_seen_by(placement: Placement, state: StateDir, node: KafkaNode) -> set[int]:
    """The live (unfenced) brokers in the metadata that this one node answers with."""
    return {b["node_id"] for b in metadata_from(placement, state, node, [])["brokers"]}


def node_ready(
    topology: Topology, placement: Placement, state: StateDir, node: KafkaNode
) -> str | None:
    """The node's controller listens; once all nodes run, its client port sees all of them live.

    A lone first node cannot register (its quorum needs a majority of the three), so the full
    check only applies when the other nodes are running: the last node of a fresh start proves
    the quorum has a leader and every broker is unfenced, and a restarted node proves it rejoined.
    """
    # The broker binds its client port only once it has registered with the quorum; the
    # controller listener is up as soon as the node runs.
    if not _port_open(placement.host(node.name), node.controller_port):
        return f"controller port {node.controller_port} not open yet"
    others = [n for n in topology.kafka.nodes if n != node]
    if not all(process.running(state, n.name) for n in others):
        return None
    # Data formatted without some principal's credentials: nobody, the brokers included, signs
    # in on the client listener until the quorum has them.
    try:
        missing = ensure_credentials(topology, placement, state)
    except kafka_credentials.CredentialsRefused as exc:
        raise process.ProcessFailed(
            node.name, str(exc), process.log_path(state, node.name)
        ) from exc
    if missing:
        return missing
    # A restarted broker's registration waits until its previous incarnation's session has run
    # out (DuplicateBrokerRegistrationException meanwhile), and the controller lists the old one
    # as live until then: only an open client port says the broker serves.
    for other in topology.kafka.nodes:
        if not _port_open(placement.host(other.name), other.port):
            return f"{other.name}'s client port {other.port} not open yet"
    try:
        seen = brokers_seen_by(placement, state, node)
    except Exception as exc:
        return f"no metadata from {node.name} yet ({exc.__class__.__name__})"
    wanted = {n.id for n in topology.kafka.nodes}
    if seen != wanted:
        return f"{node.name} sees live brokers {sorted(seen)}, waiting for {sorted(wanted)}"
    return None


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def fully_replicated(self) -> bool:
        return self.leader >= 0 and set(self.isr) >= set(self.replicas)


def reports_group_membership(metrics_text: str, group: str) -> bool:
    """Whether a consumer's Prometheus exposition says it is a member of `group` now
    (services.common.metrics: shopmesh_kafka_consumer_group_member)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "shopmesh_kafka_consumer_group_member" and (
                sample.labels.get("group") == group
            ):
                return sample.value == 1
    return False


def group_client_ids(
    topology: Topology, placement: Placement, state: StateDir, group: str
) -> list[str]:
    """The client id of each of the consumer group's current members."""
    options = kafka_auth.admin_options(state)
    with _quiet_aiokafka():
        return asyncio.run(group_members(placement.kafka_bootstrap(topology), options, group))


def group_coordinator(
    topology: Topology, placement: Placement, state: StateDir, group: str
) -> KafkaNode:
    """The node that coordinates `group` now."""

    async def lookup() -> int:
        client = AIOKafkaClient(
            bootstrap_servers=placement.kafka_bootstrap(topology),
            **kafka_auth.admin_options(state),
        )
        await client.bootstrap()
        try:
            coordinator: int = await client.coordinator_lookup(CoordinationType.GROUP, group)
            return coordinator
        finally:
            await client.close()

    with _quiet_aiokafka():
        node_id = asyncio.run(lookup())
    return next(node for node in topology.kafka.nodes if node.id == node_id)


def partitions_from(metadata: dict[str, Any]) -> list[PartitionState]:
    found = []
    for topic in metadata["topics"]:
        if topic["error_code"] != 0:
            raise RuntimeError(f"topic {topic['topic']}: metadata error {topic['error_code']}")
        for p in topic["partitions"]:
            found.append(
                PartitionState(
                    topic=topic["topic"],
                    partition=p["partition"],
                    leader=p["leader"],
                    replicas=tuple(p["replicas"]),
                    isr=tuple(p["isr"]),
                )
            )
    return found


def partitions(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    topics: list[str] | None = None,
    node: KafkaNode | None = None,
) -> list[PartitionState]:
    """Every partition of `topics` (None: all, internal ones included), as `node` sees them
    (default: the first node that answers)."""
    nodes = [node] if node else list(topology.kafka.nodes)
    last: Exception | None = None
    for candidate in nodes:
        try:
            return partitions_from(metadata_from(placement, state, candidate, topics))
        except (TimeoutError, OSError, KafkaError) as exc:
            last = exc
    raise RuntimeError(f"no Kafka node answered a metadata request ({last!r})")


def replication_summary(states: list[PartitionState], down: frozenset[int] = frozenset()) -> str:
    """`ok, all N partitions fully replicated`, or how many are not (and which, a few).

    `down`: nodes known to be dead. The controller keeps a dead broker in the ISR until its
    session times out (broker.session.timeout.ms); those partitions are not counted as healthy.
    """
    behind = [p for p in states if not p.fully_replicated or p.leader in down or set(p.isr) & down]
    if not behind:
        return f"ok, all {len(states)} partitions fully replicated"
    leaderless = sum(1 for p in behind if p.leader < 0 or p.leader in down)
    names = ", ".join(f"{p.topic}-{p.partition}" for p in behind[:3])
    more = f", +{len(behind) - 3} more" if len(behind) > 3 else ""
    extra = f", {leaderless} without a leader" if leaderless else ""
    return f"{len(behind)} of {len(states)} partitions under-replicated{extra} ({names}{more})"


def cluster_health(
    topology: Topology, placement: Placement, state: StateDir, down: frozenset[int] = frozenset()
) -> str:
    try:
        return replication_summary(partitions(topology, placement, state), down)
    except Exception as exc:
        return f"cluster metadata unavailable ({exc.__class__.__name__}: {exc})"


async def _ensure_topics(
    bootstrap: str, options: dict[str, Any], topics: tuple[TopicSpec, ...]
) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=t.name,
                    num_partitions=t.partitions,
                    replication_factor=t.replication_factor,
                    topic_configs=t.configs,
                )
                for t in missing
            ]
        )
        # (topic, error_code) or, from CreateTopics v1 on, (topic, error_code, error_message):
        # create_topics is typed as returning the base Response, which declares no fields.
        topic_errors: list[tuple[str, int] | tuple[str, int, str | None]]
        topic_errors = response.get_item("topic_errors")
        failed = [
            f"{entry[0]}: error {entry[1]} {entry[2] if len(entry) > 2 else ''}".strip()
            for entry in topic_errors
            if entry[1] not in (0, TOPIC_ALREADY_EXISTS)
        ]
        if failed:
            raise RuntimeError(f"creating Kafka topics failed: {'; '.join(failed)}")
        return [t.name for t in missing]
    finally:
        await admin.close()


def ensure_topics(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    topics: tuple[TopicSpec, ...] | None = None,
    nodes: list[KafkaNode] | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Create the missing topics, then wait until each partition of every topic has a leader
    in the metadata of each of `nodes` (default: all).

    Returns the names created (an existing topic is left alone, whatever its settings)."""
    topics = topics if topics is not None else load_topics()
    options = kafka_auth.admin_options(state)
    bootstrap = placement.kafka_bootstrap(topology)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _quiet_aiokafka():
                created = asyncio.run(_ensure_topics(bootstrap, options, topics))
            break
        except KafkaError as exc:  # a broker the metadata names that does not serve yet
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Kafka topics not created in {timeout:.0f}s: {exc}") from exc
            time.sleep(0.5)
    wait_for_leaders(topology, placement, state, nodes, max(deadline - time.monotonic(), 1.0))
    return created


async def _ensure_acls(bootstrap: str, options: dict[str, Any]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **options)
    await admin.start()
    try:
        created, deleted = await apply_bindings(admin, acl_bindings(load_clients()))
        return len(created) + len(deleted)
    finally:
        await admin.close()


def ensure_acls(topology: Topology, placement: Placement, state: StateDir) -> int:
    """Make the cluster's ACLs those of topics.yaml's clients; how many bindings changed."""
    bootstrap = placement.kafka_bootstrap(topology)
    with _quiet_aiokafka():
        return asyncio.run(_ensure_acls(bootstrap, kafka_auth.admin_options(state)))


def write_admin_properties(state: StateDir) -> Path:
    """The admin principal's client settings for Kafka's CLI tools, owner-only."""
    path = admin_properties(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    password = kafka_auth.passwords(state, (kafka_auth.ADMIN,))[kafka_auth.ADMIN]
    write_private(path, kafka_auth.client_properties(kafka_auth.ADMIN, password))
    return path


def admin_properties(state: StateDir) -> Path:
    return state.config / "kafka" / "admin-client.properties"


def wait_for_leaders(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    nodes: list[KafkaNode] | None = None,
    timeout: float = 60.0,
) -> None:
    """Until every node's metadata has a leader for every partition of every topic.

    After a restart of the whole cluster the controller elects leaders only once the brokers
    are back, and each broker learns them from the metadata log a moment later."""
    deadline = time.monotonic() + timeout
    last = "no metadata yet"
    while time.monotonic() < deadline:
        try:
            views = [
                partitions(topology, placement, state, None, node)
                for node in nodes or topology.kafka.nodes
            ]
        except Exception as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        else:
            leaderless = {f"{p.topic}-{p.partition}" for v in views for p in v if p.leader < 0}
            if not leaderless:
                return
            last = f"no leader yet for {sorted(leaderless)[:5]}"
        time.sleep(0.2)
    raise RuntimeError(f"Kafka partitions without a leader after {timeout:.0f}s: {last}")


def node_spec(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    binaries: dict[str, Path],
    node: KafkaNode,
) -> ProcessSpec:
    props_path, log4j = config_paths(state, node)
    agents = (jmx_agent(placement, node, binaries["jmx_agent"], JMX_EXPORTER_RULES),)
    return ProcessSpec(
        name=node.name,
        argv=[
            *java_argv(binaries, topology.kafka.heap, log4j, "kafka.Kafka", agents=agents),
            str(props_path),
        ],
        ports=(node.port, node.controller_port, node.metrics_port),
        env=JVM_ENV,
        ready=lambda: node_ready(topology, placement, state, node),
        # A fresh start of the last node waits for the quorum election and all three brokers to
        # register; a node restarted after SIGKILL first recovers its logs.
        ready_timeout=120,
        before_start=lambda: prepare_node(topology, placement, state, binaries, node),
        # A broker's controlled shutdown moves its partition leaders away first.
        stop_timeout=30,
    )


def node_specs(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> list[ProcessSpec]:
    specs = [node_spec(topology, placement, state, binaries, n) for n in topology.kafka.nodes]
    specs[-1].after_ready = lambda: after_cluster_ready(topology, placement, state)
    return specs


def after_cluster_ready(topology: Topology, placement: Placement, state: StateDir) -> None:
    """The topics, the ACLs and the tools' client settings, on every start."""
    running = [n for n in topology.kafka.nodes if process.running(state, n.name)]
    ensure_topics(topology, placement, state, nodes=running)
    ensure_acls(topology, placement, state)
    write_admin_properties(state)


def stop_nodes(state: StateDir, specs: list[ProcessSpec]) -> list[str]:
    """Stop all nodes together; returns the names that were running.

    One at a time, the last node's controlled shutdown would wait for a quorum that is already
    gone (two of three voters) until killed; signalled together, every broker shuts down while
    the controllers still have their majority.
    """
    was_running = [spec for spec in specs if process.running(state, spec.name)]
    for spec in was_running:
        current = process.running(state, spec.name)
        if current:
            process.signal_group(current.pid, spec.stop_signal)
    for spec in was_running:
        process.stop(state, spec.name, timeout=spec.stop_timeout)
    return [spec.name for spec in was_running]
