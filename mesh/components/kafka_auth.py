"""Who may talk to Kafka (docs/security.md, "Kafka"): SASL/SCRAM-SHA-512 on the client listener
(brokers talk to each other on it too, as the `broker` principal), SASL/PLAIN with the same
principal on the KRaft controller listener (KRaft keeps SCRAM credentials in its metadata log, so
its own quorum cannot sign in with them), and StandardAuthorizer denying whatever no ACL allows.

The principals: one per client in mesh/kafka/topics.yaml (its services and workers), `broker`
and `admin` (the project's tools, the only super users besides the brokers). Their passwords are
generated once into the state dir's secrets, one owner-only file each; no password is ever on a
command line, in a log or in the repository.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from mesh.components.kafka_scram import PROBE
from mesh.runtime.paths import OWNER_ONLY_DIR, StateDir, write_private

BROKER = "broker"
ADMIN = "admin"
MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
# The listener names (and so the `listener.name.<name>.` prefixes of their JAAS settings).
CLIENT_LISTENER = "CLIENT"
CONTROLLER_LISTENER = "CONTROLLER"
CONTROLLER_MECHANISM = "PLAIN"

SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"

# The brokers' SASL and authorization settings; the secret ones are `jaas_settings`.
AUTH_SETTINGS: dict[str, str] = {
    "listener.security.protocol.map": (
        f"{CLIENT_LISTENER}:{SECURITY_PROTOCOL},{CONTROLLER_LISTENER}:{SECURITY_PROTOCOL}"
    ),
    "inter.broker.listener.name": CLIENT_LISTENER,
    "sasl.enabled.mechanisms": MECHANISM,
    "sasl.mechanism.inter.broker.protocol": MECHANISM,
    f"listener.name.{CONTROLLER_LISTENER.lower()}.sasl.enabled.mechanisms": CONTROLLER_MECHANISM,
    "sasl.mechanism.controller.protocol": CONTROLLER_MECHANISM,
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "false",
    "super.users": f"User:{BROKER};User:{ADMIN}",
}


def principals(clients: tuple[str, ...]) -> tuple[str, ...]:
    """Every principal: the brokers', the tools' and the `clients` (topics.yaml's)."""
    names = (BROKER, ADMIN, *clients)
    if len(set(names)) != len(names):
        raise ValueError(f"Kafka principals must be distinct: {names}")
    if PROBE in names:
        raise ValueError(f"{PROBE} is the runtime's probe of the controllers, not a principal")
    return names


def password_file(state: StateDir, principal: str) -> Path:
    return state.secrets / "kafka" / principal


def passwords(state: StateDir, names: tuple[str, ...]) -> dict[str, str]:
    """Each principal's password, generated on first use into its own owner-only file."""
    folder = state.secrets / "kafka"
    folder.mkdir(mode=OWNER_ONLY_DIR, exist_ok=True)
    found = {}
    for name in names:
        path = password_file(state, name)
        if not path.exists():
            write_private(path, secrets.token_urlsafe(24))
        found[name] = path.read_text().strip()
    return found


def _jaas(module: str, username: str, password: str, **extra: str) -> str:
    options = {"username": username, "password": password, **extra}
    return f"{module} required " + " ".join(f'{k}="{v}"' for k, v in options.items()) + ";"


def jaas_settings(broker_password: str) -> dict[str, str]:
    """The brokers' secret settings: how a broker signs in to the others (SCRAM, whose
    credentials are in the metadata log) and to the controllers, which check it against the
    one PLAIN user they know."""
    scram = f"listener.name.{CLIENT_LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config"
    plain = (
        f"listener.name.{CONTROLLER_LISTENER.lower()}.{CONTROLLER_MECHANISM.lower()}"
        ".sasl.jaas.config"
    )
    return {
        scram: _jaas(SCRAM_LOGIN, BROKER, broker_password),
        plain: _jaas(PLAIN_LOGIN, BROKER, broker_password, **{f"user_{BROKER}": broker_password}),
    }


def scram_arguments(passwords_by_principal: dict[str, str]) -> list[str]:
    """`kafka-storage format` arguments that put every principal's credentials into the
    metadata log. Secret: handed over in an owner-only argument file, never on a command line."""
    args = []
    for name, password in passwords_by_principal.items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


def argument_file(args: list[str]) -> str:
    """A java launcher argument file (`java ... @file`) for a main class's arguments: one a
    line, taken as is (the launcher strips no quotes there), so none may hold whitespace."""
    spaced = [arg for arg in args if arg.split() != [arg]]
    if spaced:
        raise ValueError(f"java argument file: arguments must not hold whitespace: {spaced}")
    return "\n".join(args) + "\n"


def client_options(principal: str, password: str) -> dict[str, Any]:
    """An aiokafka client's keyword arguments to sign in as `principal`."""
    return {
        "security_protocol": SECURITY_PROTOCOL,
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": principal,
        "sasl_plain_password": password,
    }


def options_of(state: StateDir, principal: str) -> dict[str, Any]:
    """aiokafka's arguments to sign in as `principal` of the state dir's mesh (its password file
    must exist: `mesh up` made it)."""
    return client_options(principal, password_file(state, principal).read_text().strip())


def admin_options(state: StateDir) -> dict[str, Any]:
    """The project's tools sign in as `admin`."""
    return options_of(state, ADMIN)


def client_properties(principal: str, password: str) -> str:
    """A Java client's settings to sign in as `principal` (Kafka's CLI tools)."""
    return (
        "\n".join(
            [
                f"security.protocol={SECURITY_PROTOCOL}",
                f"sasl.mechanism={MECHANISM}",
                f"sasl.jaas.config={_jaas(SCRAM_LOGIN, principal, password)}",
            ]
        )
        + "\n"
    )


def controller_options(broker_password: str) -> dict[str, Any]:
    """An aiokafka connection's keyword arguments to sign in on the controller listener, as the
    brokers do there (PLAIN, the `broker` user)."""
    return {
        "security_protocol": SECURITY_PROTOCOL,
        "sasl_mechanism": CONTROLLER_MECHANISM,
        "sasl_plain_username": BROKER,
        "sasl_plain_password": broker_password,
    }
