"""The `state` volume: the containers' state dir (secrets, certs, generated configs), and the
users that own what is in it."""

from __future__ import annotations

from pathlib import Path

from mesh.runtime.paths import StateDir
from mesh.topology import EdgeInstance

STATE_MOUNT = "/run/shopmesh"
STATE = StateDir(Path(STATE_MOUNT))
PGPASS = STATE.secrets / "pgpass"
POSTGRES_SUPERUSER_PASSWORD = STATE.secrets / "postgres-superuser"
BALANCER_CONFIG = STATE.config / "haproxy.cfg"
EDGE_DESCRIPTORS = STATE.config / "protos.pb"
# Not on the volume: in each edge container's own /tmp, where only its Envoy's user runs.
EDGE_ADMIN_SOCKET = Path("/tmp/envoy-admin.sock")


def edge_config(edge: EdgeInstance) -> Path:
    return STATE.config / f"{edge.id}-envoy.json"


# The uid the service image runs as (docker/service.Dockerfile); the Envoys run as it too
# (ENVOY_UID), so the files they read are its own; the rate-limit service runs as it too.
# Postgres's and Redis's images run as uid 999.
APP_UID = 10001
POSTGRES_UID = 999
REDIS_UID = 999

# The official Redis image's working directory (nothing is saved there: no persistence).
REDIS_DIR = Path("/data")
