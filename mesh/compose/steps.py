"""What runs in the containers: the one-shot `init` (the secrets) and `bootstrap` (databases,
the edge's config and registration), and a worker's health check (`worker-ready GROUP`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from mesh import registration
from mesh.components import balancer, consul, edge, kafka, postgres, ratelimit
from mesh.compose.volume import (
    APP_UID,
    BALANCER_CONFIG,
    EDGE_ADMIN_SOCKET,
    EDGE_DESCRIPTORS,
    PGPASS,
    POSTGRES_SUPERUSER_PASSWORD,
    POSTGRES_UID,
    REDIS_DIR,
    REDIS_UID,
    STATE,
    edge_config,
)
from mesh.placement import (
    POSTGRES,
    ComposePlacement,
)
from mesh.runtime import demo, protos, tls
from mesh.topology import Topology


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
    redis_config = ratelimit.write_redis_config(topology, placement, STATE, REDIS_DIR)
    shutil.chown(redis_config, REDIS_UID, REDIS_UID)
    shutil.chown(ratelimit.password_file(STATE), APP_UID, APP_UID)
    ratelimit.write_service_config(topology, STATE)


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
    client = consul.ConsulClient(placement.consul_http_addr(topology))
    try:
        for instance in topology.edge.instances:
            config = edge.envoy_config(topology, placement, files, instance)
            edge_config(instance).write_text(json.dumps(config, indent=2))
            client.register(registration.edge_registration(topology, placement, instance))
    finally:
        client.close()
    BALANCER_CONFIG.write_text(balancer.config(topology, placement))
    BALANCER_CONFIG.chmod(0o644)  # read by the HAProxy image's own user


def worker_ready(group: str) -> int:
    bootstrap_servers = os.environ["SHOPMESH_KAFKA_BOOTSTRAP"]
    members = asyncio.run(kafka.group_members(bootstrap_servers, group))
    return 0 if os.environ["SHOPMESH_INSTANCE"] in members else 1
