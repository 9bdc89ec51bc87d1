"""A service's Kafka sign-in, from its environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mesh.runtime.tls import new_ca
from services.common.config import ConfigError
from services.common.messaging.security import sasl_options


def test_the_service_signs_in_with_scram_as_its_principal(tmp_path: Path) -> None:
    secret = tmp_path / "orders"
    secret.write_text("pw\n")
    env = {"SHOPMESH_KAFKA_USERNAME": "orders", "SHOPMESH_KAFKA_PASSWORD_FILE": str(secret)}
    assert sasl_options(env) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "orders",
        "sasl_plain_password": "pw",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SHOPMESH_KAFKA_USERNAME is required"),
        ({"SHOPMESH_KAFKA_USERNAME": "orders"}, "SHOPMESH_KAFKA_PASSWORD_FILE is required"),
        (
            {"SHOPMESH_KAFKA_USERNAME": "orders", "SHOPMESH_KAFKA_PASSWORD_FILE": "/nonexistent"},
            "cannot read /nonexistent",
        ),
    ],
)
def test_a_service_without_its_kafka_credentials_does_not_start(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        sasl_options(env)


def test_an_empty_password_file_is_refused_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "orders"
    secret.write_text("\n")
    env = {"SHOPMESH_KAFKA_USERNAME": "orders", "SHOPMESH_KAFKA_PASSWORD_FILE": str(secret)}
    with pytest.raises(ConfigError, match="is empty"):
        sasl_options(env)


def test_with_a_ca_file_scram_goes_over_tls_checked_with_that_ca(tmp_path: Path) -> None:
    secret, ca = tmp_path / "orders", tmp_path / "ca.crt"
    secret.write_text("pw\n")
    _, cert = new_ca("a test Kafka cluster CA")
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    env = {
        "SHOPMESH_KAFKA_USERNAME": "orders",
        "SHOPMESH_KAFKA_PASSWORD_FILE": str(secret),
        "SHOPMESH_KAFKA_CA_FILE": str(ca),
    }
    options = sasl_options(env)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_password"] == "pw"
    trusted = options["ssl_context"].get_ca_certs()
    subjects = [dict(rdn[0] for rdn in c["subject"]) for c in trusted]
    assert [subject["commonName"] for subject in subjects] == ["a test Kafka cluster CA"]


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    secret, ca = tmp_path / "orders", tmp_path / "ca.crt"
    secret.write_text("pw\n")
    ca.write_text("not a certificate\n")
    env = {
        "SHOPMESH_KAFKA_USERNAME": "orders",
        "SHOPMESH_KAFKA_PASSWORD_FILE": str(secret),
        "SHOPMESH_KAFKA_CA_FILE": str(ca),
    }
    with pytest.raises(ConfigError, match="SHOPMESH_KAFKA_CA_FILE"):
        sasl_options(env)
