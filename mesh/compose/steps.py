"""What runs in the containers: the one-shots `init` (the secrets), `consul-acl` (Consul's ACL
policies and tokens), `bootstrap` (databases, the edge's config and registration) and
`kafka-acls`, and a worker's health check (`worker-ready GROUP`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from aiokafka.admin import AIOKafkaAdminClient

from mesh import registration
from mesh.components import balancer, consul, edge, kafka, kafka_auth, postgres, ratelimit
from mesh.components.consul_acl import EDGE_SERVICE, PROMETHEUS, agent_nodes, service_token
from mesh.components.kafka_acl import acl_bindings, apply_bindings, load_clients
from mesh.compose import kafka_files
from mesh.compose.volume import (
    APP_UID,
    BALANCER_CONFIG,
    CONSUL_UID,
    EDGE_ADMIN_SOCKET,
    EDGE_DESCRIPTORS,
    PGPASS,
    POSTGRES_SUPERUSER_PASSWORD,
    POSTGRES_UID,
    PROMETHEUS_UID,
    REDIS_DIR,
    REDIS_UID,
    STATE,
    edge_config,
)
from mesh.placement import (
    POSTGRES,
    ComposePlacement,
)
from mesh.runtime import consul as consul_runtime
from mesh.runtime import consul_acl, demo, protos, tls
from mesh.topology import Topology
from services.common.messaging.security import sasl_options


def init(topology: Topology) -> None:
    """Generate every secret into the state volume if missing, each readable by its one user."""
    placement = ComposePlacement.of(topology)
    STATE.ensure()
    # Each user may enter the folders to open its own files (all 0600), not list the others.
    for folder in (STATE.root, STATE.config, STATE.secrets):
        folder.chmod(0o711)
    passwords = postgres.passwords(STATE, topology)
    if not POSTGRES_SUPERUSER_PASSWORD.exists():
        POSTGRES_SUPERUSER_PASSWORD.touch(mode=0o600)
        POSTGRES_SUPERUSER_PASSWORD.write_text(passwords[postgres.SUPERUSER])
    shutil.chown(POSTGRES_SUPERUSER_PASSWORD, POSTGRES_UID, POSTGRES_UID)
    host, port = placement.host(POSTGRES), topology.postgres_port
    lines = [
        f"{host}:{port}:{db}:{db}:{pw}" for db, pw in passwords.items() if db != postgres.SUPERUSER
    ]
    PGPASS.touch(mode=0o600)
    PGPASS.write_text("\n".join(lines) + "\n")
    certs = tls.ensure_edge_certs(STATE, placement.public())
    for path in (PGPASS, demo.ensure_seed(STATE), certs.server_cert, certs.server_key):
        shutil.chown(path, APP_UID, APP_UID)
    shutil.chown(certs.server_cert.parent, APP_UID, APP_UID)
    kafka.cluster_id(topology, STATE)
    kafka.cluster_id_file(STATE).chmod(0o644)  # an id, not a secret: read by the nodes
    kafka_files.write(topology, placement)
    redis_config = ratelimit.write_redis_config(topology, placement, STATE, REDIS_DIR)
    shutil.chown(redis_config, REDIS_UID, REDIS_UID)
    shutil.chown(ratelimit.password_file(STATE), APP_UID, APP_UID)
    ratelimit.write_service_config(topology, STATE)
    _consul_transport(topology, placement)
    _consul_tokens(topology, placement)


def _consul_transport(topology: Topology, placement: ComposePlacement) -> None:
    """The gossip key and each agent's certificate and key for the consul user; the CA's
    certificate for everyone (every client of an agent checks the agent's with it); its key
    for nobody."""
    consul_runtime.ensure_transport(topology, placement, STATE)
    shutil.chown(consul_runtime.gossip_key_file(STATE), CONSUL_UID, CONSUL_UID)
    for agent in consul.agent_names(topology, placement):
        certs = tls.consul_certs(STATE, agent)
        for path in (certs.cert, certs.key):
            shutil.chown(path, CONSUL_UID, CONSUL_UID)
    ca_cert = tls.consul_ca(STATE)
    ca_cert.chmod(0o644)
    ca_cert.parent.chmod(0o711)


def _consul_tokens(topology: Topology, placement: ComposePlacement) -> None:
    """Each ACL token for the one user that reads it: an agent's config file for the consul
    user, a service's token for the app user (its instances, sidecars and health checks),
    Prometheus's for nobody; the operator's and the management token stay root's (the
    one-shots). Patroni does not run in compose."""
    consul_acl.ensure_token_files(topology, placement, STATE)
    consul_acl.tokens_dir(STATE).chmod(0o711)
    for agent in agent_nodes(topology, placement):
        shutil.chown(consul_acl.write_agent_config(topology, STATE, agent), CONSUL_UID, CONSUL_UID)
    services = [*(s.name for s in topology.services), EDGE_SERVICE]
    for service in services:
        shutil.chown(consul_acl.token_file(STATE, service_token(service)), APP_UID, APP_UID)
    prometheus_token = consul_acl.token_file(STATE, PROMETHEUS)
    shutil.chown(prometheus_token, PROMETHEUS_UID, PROMETHEUS_UID)


def consul_acls(topology: Topology) -> None:
    consul_acl.ensure_acls(topology, ComposePlacement.of(topology), STATE)


def bootstrap(topology: Topology) -> None:
    """Once Postgres and Consul are up: the databases and roles, each edge's config and its
    Consul registration (the edge is no Python service, so nothing else registers it), and the
    balancer's config."""
    passwords = postgres.passwords(STATE, topology)
    placement = ComposePlacement.of(topology)
    asyncio.run(postgres.ensure_databases(topology, placement, passwords))
    shutil.copyfile(protos.DESCRIPTOR_SET, EDGE_DESCRIPTORS)
    certs = tls.edge_certs(STATE)
    files = edge.EdgeFiles(certs.server_cert, certs.server_key, EDGE_DESCRIPTORS, EDGE_ADMIN_SOCKET)
    edge_token = consul_acl.token_file(STATE, service_token(EDGE_SERVICE))
    addr = placement.consul_http_addr(topology)
    with consul.ConsulClient(addr, ca_file=tls.consul_ca(STATE), token_file=edge_token) as client:
        for instance in topology.edge.instances:
            config = edge.envoy_config(topology, placement, files, instance)
            edge_config(instance).write_text(json.dumps(config, indent=2))
            client.register(registration.edge_registration(topology, placement, instance))
    BALANCER_CONFIG.write_text(balancer.config(topology, placement))
    BALANCER_CONFIG.chmod(0o644)  # read by the HAProxy image's own user


def kafka_acls(topology: Topology) -> None:
    """Once the topics exist: the ACLs of topics.yaml's clients, as natively."""
    bootstrap_servers = ComposePlacement.of(topology).kafka_bootstrap(topology)
    asyncio.run(_apply_acls(bootstrap_servers))


async def _apply_acls(bootstrap_servers: str) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **kafka_auth.admin_options(STATE)
    )
    await admin.start()
    try:
        await apply_bindings(admin, acl_bindings(load_clients()))
    finally:
        await admin.close()


def worker_ready(group: str) -> int:
    """Asked as the worker's own principal (Read on its group lets it describe the group),
    signed in as the worker itself is, from the same environment (over TLS where it is: the
    Helm chart's readiness probe runs this too)."""
    bootstrap_servers = os.environ["SHOPMESH_KAFKA_BOOTSTRAP"]
    members = asyncio.run(kafka.group_members(bootstrap_servers, sasl_options(), group))
    return 0 if os.environ["SHOPMESH_INSTANCE"] in members else 1
