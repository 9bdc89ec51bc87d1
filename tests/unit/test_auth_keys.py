"""Signing keys, the key ring's JWKS, token shapes, the seed file and auth's settings."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import service_env
from mesh.topology import load
from services.auth.config import AuthSettings
from services.auth.login_limits import LoginLimitSettings
from services.auth.seed import SeedError, parse_seed
from services.auth.tokens import (
    EXTERNAL_TTL_S,
    INTERNAL_TTL_S,
    INTERNAL_TTL_SPREAD_S,
    KeyRing,
    NoActiveKey,
    external_claims,
    generate_signing_key,
    internal_claims,
    jwk_thumbprint,
)
from services.common.config import ConfigError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# Three keys that signed one after another: OLD until 61 minutes ago, RECENT until 59 minutes
# ago, ACTIVE since; NEXT published, waiting for a rotation.
OLD = replace(generate_signing_key(NOW - 120 * MINUTE), active_from=NOW - 120 * MINUTE)
RECENT = replace(generate_signing_key(NOW - 90 * MINUTE), active_from=NOW - 61 * MINUTE)
ACTIVE = replace(generate_signing_key(NOW - 62 * MINUTE), active_from=NOW - 59 * MINUTE)
NEXT = generate_signing_key(NOW - 10 * MINUTE)


def test_the_kid_is_the_rfc_7638_thumbprint():
    # The example of RFC 7638 §3.1.
    example = {
        "kty": "RSA",
        "e": "AQAB",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
            "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
            "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
            "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
            "Cur-kEgU8awapJzKnqDKgw"
        ),
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert ACTIVE.kid == jwk_thumbprint(ACTIVE.public_jwk)


def test_a_new_key_is_rsa_2048_rs256_and_publishes_no_private_part():
    jwk = ACTIVE.public_jwk
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["kid"]) == ("RSA", "RS256", "sig", ACTIVE.kid)
    assert {"d", "p", "q", "dp", "dq", "qi"}.isdisjoint(jwk)
    assert ACTIVE.signer.to_dict()["n"] == jwk["n"]
    assert len(ACTIVE.verification_key.key.public_key().to_pem()) > 400
    assert "PRIVATE" not in repr(ACTIVE)


def test_the_jwks_has_the_signing_key_the_next_one_and_keys_retired_less_than_an_hour_ago():
    ring = KeyRing([OLD, RECENT, ACTIVE, NEXT])
    assert ring.signing_key(NOW) == ACTIVE
    assert [key["kid"] for key in ring.jwks(NOW)["keys"]] == [ACTIVE.kid, NEXT.kid, RECENT.kid]
    assert ring.verification_key(NEXT.kid, NOW) is not None
    assert ring.verification_key(RECENT.kid, NOW) is not None
    assert ring.verification_key(OLD.kid, NOW) is None
    assert ring.verification_key(RECENT.kid, NOW + 2 * MINUTE) is None
    assert [key.kid for key in ring.retired_before(NOW - 60 * MINUTE, NOW)] == [OLD.kid]


def test_a_scheduled_key_is_published_before_it_signs_and_signs_from_its_time_on():
    starts = NOW + 2 * MINUTE
    ring = KeyRing([ACTIVE, replace(NEXT, active_from=starts)])
    assert ring.signing_key(NOW).kid == ACTIVE.kid
    assert [key["kid"] for key in ring.jwks(NOW)["keys"]] == [ACTIVE.kid, NEXT.kid]
    assert ring.signing_key(starts).kid == NEXT.kid
    assert [key["kid"] for key in ring.jwks(starts)["keys"]] == [NEXT.kid, ACTIVE.kid]
    assert ring.last_scheduled().kid == NEXT.kid
    assert ring.next_key() is None


def test_a_ring_needs_a_key_that_signs():
    with pytest.raises(NoActiveKey):
        KeyRing([NEXT])
    # A clock behind the one of the instance that made the first key: that key signs.
    assert KeyRing([replace(NEXT, active_from=NOW + MINUTE)]).signing_key(NOW).kid == NEXT.kid


def test_token_shapes():
    external = external_claims(
        issuer="https://x/auth",
        sub="alice",
        client_id="c",
        scope=["shopmesh"],
        gty="password",
        now=100,
    )
    assert external["exp"] - external["iat"] == EXTERNAL_TTL_S == 900
    assert (external["aud"], external["nbf"], external["scope"]) == (
        "shopmesh-api",
        100,
        "shopmesh",
    )
    internal = internal_claims(sub="alice", roles=["user", "admin", "user"], now=100)
    lifetime = internal["exp"] - internal["iat"]
    assert INTERNAL_TTL_S - INTERNAL_TTL_SPREAD_S <= lifetime <= INTERNAL_TTL_S == 300
    assert (internal["iss"], internal["aud"]) == ("shopmesh-auth", "shopmesh-internal")
    assert internal["roles"] == ["admin", "user"]
    assert internal["jti"] != internal_claims(sub="alice", roles=[], now=100)["jti"]


def test_a_seed_file_is_parsed():
    seed = parse_seed(
        {
            "users": {"alice": "pw-a", "bob": "pw-b"},
            "clients": {"shopmesh-cli": {"secret": "s", "roles": ["service"]}},
        }
    )
    assert seed.users == {"alice": "pw-a", "bob": "pw-b"}
    assert seed.clients["shopmesh-cli"].roles == ("service",)
    assert "pw-a" not in repr(seed) and "'s'" not in repr(seed)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"users": []},
        {"users": {"alice": ""}},
        {"users": {"alice": 1}},
        {"users": {"": "pw"}},
        {"users": {"al ice": "pw"}},
        {"users": {"alice": "x" * 2000}},
        {"clients": {"cli": "secret"}},
        {"clients": {"cli": {"secret": ""}}},
        {"clients": {"cli": {"secret": "s", "roles": "admin"}}},
        {"clients": {"shopmesh-public": {"secret": "s"}}},
    ],
)
def test_a_malformed_seed_is_refused(document):
    with pytest.raises(SeedError):
        parse_seed(document)


def test_auth_settings_come_from_the_environment():
    settings = AuthSettings.from_env(
        {
            "SHOPMESH_AUTH_ISSUER": "https://127.0.0.1:8443/auth/",
            "SHOPMESH_AUTH_SEED_FILE": "/s.json",
        }
    )
    assert settings.issuer == "https://127.0.0.1:8443/auth"
    assert str(settings.seed_file) == "/s.json"
    assert settings.login_limits == LoginLimitSettings(window_s=900, per_user=10, per_address=100)
    assert settings.jwks_cache_s == 60
    tuned = AuthSettings.from_env(
        {
            "SHOPMESH_AUTH_ISSUER": "https://127.0.0.1:8443/auth/",
            "SHOPMESH_AUTH_SEED_FILE": "/s.json",
            "SHOPMESH_AUTH_LOGIN_WINDOW_S": "60",
            "SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_USER": "5",
            "SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS": "50",
            "SHOPMESH_AUTH_JWKS_CACHE_S": "30",
        }
    )
    assert tuned.login_limits == LoginLimitSettings(window_s=60, per_user=5, per_address=50)
    assert tuned.jwks_cache_s == 30


@pytest.mark.parametrize(
    "env",
    [
        {"SHOPMESH_AUTH_SEED_FILE": "/s.json"},
        {"SHOPMESH_AUTH_ISSUER": "ftp://x", "SHOPMESH_AUTH_SEED_FILE": "/s.json"},
        {"SHOPMESH_AUTH_ISSUER": "https://x/auth"},
        {
            "SHOPMESH_AUTH_ISSUER": "https://x/auth",
            "SHOPMESH_AUTH_SEED_FILE": "/s.json",
            "SHOPMESH_AUTH_LOGIN_WINDOW_S": "0",
        },
        {
            "SHOPMESH_AUTH_ISSUER": "https://x/auth",
            "SHOPMESH_AUTH_SEED_FILE": "/s.json",
            "SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_USER": "ten",
        },
    ],
)
def test_missing_or_malformed_auth_settings_are_config_errors(env):
    with pytest.raises(ConfigError):
        AuthSettings.from_env(env)


def test_internal_tokens_issued_together_do_not_all_expire_together():
    lifetimes = {internal_claims(sub="alice", roles=[], now=100)["exp"] for _ in range(200)}
    assert len(lifetimes) > 10, "a burst of exchanges would all be repeated in the same second"


def test_the_mesh_hands_auth_the_topologys_login_limits_and_jwks_cache(tmp_path):
    topology, state = load(), StateDir(tmp_path)
    state.ensure()
    env = service_env(topology, state, topology.service("auth").instances[0])
    settings = AuthSettings.from_env(env)
    limits = topology.login_limits
    assert settings.login_limits == LoginLimitSettings(
        window_s=limits.window_s, per_user=limits.per_user, per_address=limits.per_address
    )
    assert settings.jwks_cache_s == topology.edge.jwks_cache_s
