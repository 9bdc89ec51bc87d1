"""How a service signs in to Kafka: SASL/SCRAM-SHA-512 as its own principal
(`SHOPMESH_KAFKA_USERNAME`), with the password in the owner-only file
`SHOPMESH_KAFKA_PASSWORD_FILE` (never in the environment, never logged). The brokers allow each
principal only its own topics and consumer groups (docs/security.md, "Kafka"). Where the brokers'
listener is TLS (Strimzi's, docs/kubernetes.md), `SHOPMESH_KAFKA_CA_FILE` names the CA
certificate they are checked with, and SCRAM goes over TLS."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.common.config import ConfigError, ca_file

USERNAME_ENV = "SHOPMESH_KAFKA_USERNAME"
PASSWORD_FILE_ENV = "SHOPMESH_KAFKA_PASSWORD_FILE"
CA_FILE_ENV = "SHOPMESH_KAFKA_CA_FILE"
MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
TLS_SECURITY_PROTOCOL = "SASL_SSL"


def sasl_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka's sign-in arguments from the environment; ConfigError if either variable is
    missing or the password file cannot be read or is empty, or the CA file holds no
    certificate."""
    source = os.environ if env is None else env
    username = source.get(USERNAME_ENV, "").strip()
    if not username:
        raise ConfigError(f"{USERNAME_ENV} is required but not set")
    path = source.get(PASSWORD_FILE_ENV, "").strip()
    if not path:
        raise ConfigError(f"{PASSWORD_FILE_ENV} is required but not set")
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{PASSWORD_FILE_ENV}: cannot read {path} ({exc.strerror})") from None
    if not password:
        raise ConfigError(f"{PASSWORD_FILE_ENV}: {path} is empty")
    options: dict[str, Any] = {
        "security_protocol": SECURITY_PROTOCOL,
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }
    if source.get(CA_FILE_ENV, "").strip():
        options["security_protocol"] = TLS_SECURITY_PROTOCOL
        options["ssl_context"] = ssl.create_default_context(cafile=ca_file(source, CA_FILE_ENV))
    return options
