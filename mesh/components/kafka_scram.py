"""SCRAM credentials added to a running KRaft cluster (docs/security.md, "Kafka"): Kafka's
AlterUserScramCredentials request (KIP-554, API key 51), which aiokafka does not have. A
cluster whose data was formatted without a principal's credentials (before SASL, or before the
principal was added to mesh/kafka/topics.yaml) gets them this way; the controllers take the
request on their own listener, where the brokers' PLAIN user signs in, since nobody can sign in
on the client listener until the credentials exist. The client computes the salted password
(RFC 5802's Hi, PBKDF2 with HMAC-SHA-512): the password itself never leaves this process.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

# org.apache.kafka.clients.admin.ScramMechanism's code for kafka_auth.MECHANISM.
SCRAM_SHA_512 = 2
# Kafka's own default (kafka-storage format --add-scram, kafka-configs) and its minimum.
ITERATIONS = 4096
SALT_BYTES = 32
# A deletion of a credential that is not there: already gone, nothing to do.
RESOURCE_NOT_FOUND = 91
# A user no principal is (topics.yaml names services): deleting its credential changes nothing,
# and tells whether the controller asked is the active one.
PROBE = "shopmesh.not-a-principal"


class AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("tags", TaggedFields),
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


AlterUserScramCredentialsRequestStruct: TypeAlias = AlterUserScramCredentialsRequest_v0


@dataclass(frozen=True)
class Upsertion:
    """A principal's SCRAM-SHA-512 credential as the request carries it."""

    name: str
    salt: bytes
    salted_password: bytes
    iterations: int = ITERATIONS


def salted_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> bytes:
    """RFC 5802's SaltedPassword := Hi(password, salt, i), with HMAC-SHA-512."""
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def upsertion(name: str, password: str) -> Upsertion:
    salt = secrets.token_bytes(SALT_BYTES)
    return Upsertion(name, salt, salted_password(password, salt))


class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequestStruct]):
    API_KEY = 51

    def __init__(self, upsertions: list[Upsertion], deletions: list[str]) -> None:
        self._upsertions = upsertions
        self._deletions = deletions

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequestStruct]
    ) -> AlterUserScramCredentialsRequestStruct:
        return request_struct_class(
            [(name, SCRAM_SHA_512, {}) for name in self._deletions],
            [
                (u.name, SCRAM_SHA_512, u.iterations, u.salt, u.salted_password, {})
                for u in self._upsertions
            ],
            {},
        )


@dataclass(frozen=True)
class CredentialChanges:
    """What the cluster's SCRAM credentials need: principals to add, principals to remove."""

    add: tuple[str, ...]
    remove: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def changes(held: list[set[str]], wanted: tuple[str, ...]) -> CredentialChanges:
    """From the principals each node's data is known to hold credentials for to `wanted`.
    Added: any wanted principal one of them may lack (adding again is harmless). Removed: a
    principal nobody asks for any more (it could still sign in, though no ACL lets it do
    anything)."""
    return CredentialChanges(
        add=tuple(name for name in wanted if not all(name in names for names in held)),
        remove=tuple(sorted(set().union(*held) - set(wanted))),
    )


def refusals(response: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Each user the response did not change, with its error code and message (a deletion of
    a credential that is not there counts as done)."""
    return {
        result["user"]: (result["error_code"], result["error_message"] or "")
        for result in response["results"]
        if result["error_code"] not in (0, RESOURCE_NOT_FOUND)
    }
