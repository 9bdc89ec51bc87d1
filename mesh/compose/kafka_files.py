"""The Kafka nodes' files in the state volume, written by `init` (docs/security.md, "Kafka"): each
node's server.properties with the broker's secret settings, its format arguments with every
principal's SCRAM credentials, and the admin's client settings; each readable by its one user.
The compose file itself holds no password."""

from __future__ import annotations

import shutil

from mesh.components import kafka, kafka_auth
from mesh.components.kafka_acl import load_clients
from mesh.compose.volume import (
    APP_UID,
    KAFKA_ADMIN_PROPERTIES,
    KAFKA_DATA,
    KAFKA_UID,
    STATE,
    kafka_format_arguments,
    kafka_node_properties,
)
from mesh.placement import ComposePlacement
from mesh.runtime.paths import write_private
from mesh.topology import Topology


def write(topology: Topology, placement: ComposePlacement) -> None:
    clients = tuple(c.principal for c in load_clients())
    passwords = kafka_auth.passwords(STATE, kafka_auth.principals(clients))
    jaas = kafka_auth.jaas_settings(passwords[kafka_auth.BROKER])
    for node in topology.kafka.nodes:
        props = kafka_node_properties(node)
        settings = kafka.server_properties(topology, placement, node, KAFKA_DATA) | jaas
        write_private(props, kafka.render_properties(settings))
        arguments = kafka_format_arguments(node)
        # A restarted container finds its log dir formatted already: --ignore-formatted.
        format_args = ["format", "--ignore-formatted", "-t", kafka.cluster_id(topology, STATE)]
        format_args += ["-c", str(props), *kafka_auth.scram_arguments(passwords)]
        write_private(arguments, kafka_auth.argument_file(format_args))
        for path in (props, arguments):
            shutil.chown(path, KAFKA_UID, KAFKA_UID)
    admin = kafka_auth.client_properties(kafka_auth.ADMIN, passwords[kafka_auth.ADMIN])
    write_private(KAFKA_ADMIN_PROPERTIES, admin)
    shutil.chown(KAFKA_ADMIN_PROPERTIES, KAFKA_UID, KAFKA_UID)
    (STATE.secrets / "kafka").chmod(0o711)
    for client in clients:
        shutil.chown(kafka_auth.password_file(STATE, client), APP_UID, APP_UID)
