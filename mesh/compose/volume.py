"""The `state` volume: the containers' state dir (secrets, certs, generated configs), and the
users that own what is in it."""

from __future__ import annotations

from pathlib import Path

from mesh.runtime.paths import StateDir
from mesh.topology import EdgeInstance, KafkaNode

STATE_MOUNT = "/run/shopmesh"
STATE = StateDir(Path(STATE_MOUNT))
PGPASS = STATE.secrets / "pgpass"
POSTGRES_SUPERUSER_PASSWORD = STATE.secrets / "postgres-superuser"
BALANCER_CONFIG = STATE.config / "haproxy.cfg"
EDGE_DESCRIPTORS = STATE.config / "protos.pb"
# The Kafka tools' (and the topic creation's) admin client settings.
KAFKA_ADMIN_PROPERTIES = STATE.config / "kafka-admin.properties"
KAFKA_DATA = Path("/var/lib/kafka/data")


def edge_config(edge: EdgeInstance) -> Path:
    return STATE.config / f"{edge.id}-envoy.json"


def kafka_node_properties(node: KafkaNode) -> Path:
    """The node's server.properties, its secret settings included."""
    return STATE.config / f"{node.name}.properties"


def kafka_format_arguments(node: KafkaNode) -> Path:
    """`kafka-storage format`'s arguments (its SCRAM credentials) as a java argument file."""
    return STATE.config / f"{node.name}-format.args"


# The uid the service image runs as (docker/service.Dockerfile); the Envoys run as it too
# (ENVOY_UID), so the files they read are its own; the rate-limit service runs as it too.
# Postgres's and Redis's images run as uid 999; apache/kafka's as its appuser, uid 1000.
APP_UID = 10001
POSTGRES_UID = 999
CONSUL_UID = 100  # the consul user of hashicorp/consul's image, which its entrypoint runs as
REDIS_UID = 999
KAFKA_UID = 1000

# The official Redis image's working directory (nothing is saved there: no persistence).
REDIS_DIR = Path("/data")
