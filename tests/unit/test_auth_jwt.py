"""JWT attacks against both verifiers: auth's check of external tokens (the edge's checks) and
services.common.auth.jwt.verify_internal (what every service runs). In memory, no network."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws

from services.auth.service import AuthService
from services.auth.tokens import (
    EXTERNAL_AUDIENCE,
    SigningKey,
    external_claims,
    generate_signing_key,
    internal_claims,
    sign,
)
from services.common.auth.jwt import (
    MAX_TOKEN_LENGTH,
    VerificationKey,
    bearer_token,
    verify_internal,
)
from services.common.auth.principal import Principal, Unauthenticated

ISSUER = "https://127.0.0.1:8443/auth"
KEY = generate_signing_key(datetime.now(UTC))
OTHER_KEY = generate_signing_key(datetime.now(UTC))


class MemoryKeys:
    """A KeySource (and signer) over keys held in memory."""

    def __init__(self, signing: SigningKey, *extra: VerificationKey) -> None:
        self.signing = signing
        self.keys = {signing.kid: signing.verification_key} | {k.kid: k for k in extra}

    async def key(self, kid):
        return self.keys.get(kid)

    def sign(self, claims):
        return sign(claims, self.signing)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_for(kind: str, now: int, **changes) -> dict:
    if kind == "external":
        claims = external_claims(
            issuer=ISSUER, sub="alice", client_id="cli", scope=["shopmesh"], gty="password", now=now
        )
    else:
        claims = internal_claims(sub="alice", roles=["user"], now=now)
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def verify(kind: str, token: str, keys=None):
    keys = keys or MemoryKeys(KEY)

    async def go():
        if kind == "external":
            service = AuthService(None, keys, None, issuer=ISSUER)
            return await service.verify_external(token)
        return await verify_internal(token, keys)

    return asyncio.run(go())


def hs256_with_public_key(claims: dict) -> str:
    """The classic key-confusion forgery: HMAC keyed with the RSA public key's PEM."""
    public_pem = KEY.verification_key.key.to_pem()
    header = {"alg": "HS256", "kid": KEY.kid, "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    claims["roles"] = ["admin"]
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


NOW = int(time.time())

ATTACKS = {
    "missing token": lambda kind: "",
    "not a JWT": lambda kind: "not-a-token",
    "expired": lambda kind: sign(claims_for(kind, NOW - 3600), KEY),
    "expired beyond the leeway": lambda kind: sign(claims_for(kind, NOW - 1000, exp=NOW - 31), KEY),
    "not yet valid": lambda kind: sign(claims_for(kind, NOW, nbf=NOW + 600), KEY),
    "issued in the future": lambda kind: sign(claims_for(kind, NOW, iat=NOW + 600), KEY),
    "wrong issuer": lambda kind: sign(claims_for(kind, NOW, iss="https://evil.example"), KEY),
    "wrong audience": lambda kind: sign(claims_for(kind, NOW, aud="someone-else"), KEY),
    "no audience": lambda kind: sign(claims_for(kind, NOW, aud=None), KEY),
    "no subject": lambda kind: sign(claims_for(kind, NOW, sub=None), KEY),
    "no exp": lambda kind: sign(claims_for(kind, NOW, exp=None), KEY),
    "exp as a string": lambda kind: sign(claims_for(kind, NOW, exp=str(NOW + 900)), KEY),
    "exp as a boolean": lambda kind: sign(claims_for(kind, NOW, exp=True), KEY),
    "tampered claims": lambda kind: tampered(sign(claims_for(kind, NOW), KEY)),
    "alg none": lambda kind: unsigned(
        {"alg": "none", "kid": KEY.kid, "typ": "JWT"}, claims_for(kind, NOW, sub="admin")
    ),
    "alg None spelled differently": lambda kind: unsigned(
        {"alg": "None", "kid": KEY.kid}, claims_for(kind, NOW)
    ),
    "HS256 signed with the RSA public key": lambda kind: hs256_with_public_key(
        claims_for(kind, NOW, sub="admin")
    ),
    "unknown kid": lambda kind: jws.sign(
        claims_for(kind, NOW), OTHER_KEY.signer, headers={"kid": "made-up"}, algorithm="RS256"
    ),
    "known kid, signed by another key": lambda kind: jws.sign(
        claims_for(kind, NOW), OTHER_KEY.signer, headers={"kid": KEY.kid}, algorithm="RS256"
    ),
    "no kid": lambda kind: jws.sign(claims_for(kind, NOW), KEY.signer, algorithm="RS256"),
    "alg ES256 on an RSA key": lambda kind: unsigned(
        {"alg": "ES256", "kid": KEY.kid}, claims_for(kind, NOW), b"x" * 64
    ),
    "RS512 (not allowed)": lambda kind: jws.sign(
        claims_for(kind, NOW), KEY.private_key_pem, headers={"kid": KEY.kid}, algorithm="RS512"
    ),
    "critical header": lambda kind: jws.sign(
        claims_for(kind, NOW),
        KEY.signer,
        headers={"kid": KEY.kid, "crit": ["exp"]},
        algorithm="RS256",
    ),
    "oversized": lambda kind: sign(claims_for(kind, NOW, pad="x" * MAX_TOKEN_LENGTH), KEY),
    "claims are not an object": lambda kind: jws.sign(
        b"[1, 2]", KEY.signer, headers={"kid": KEY.kid}, algorithm="RS256"
    ),
}


# What each attack is refused for (a fragment of the reason).
REFUSED_FOR = {
    "missing token": "missing token",
    "not a JWT": "malformed",
    "expired": "expired",
    "expired beyond the leeway": "expired",
    "not yet valid": "not yet valid",
    "issued in the future": "issued in the future",
    "wrong issuer": "issuer",
    "wrong audience": "audience",
    "no audience": "audience",
    "no subject": "subject",
    "no exp": "exp",
    "exp as a string": "exp",
    "exp as a boolean": "exp",
    "tampered claims": "signature",
    "alg none": "algorithm not allowed",
    "alg None spelled differently": "algorithm not allowed",
    "HS256 signed with the RSA public key": "algorithm not allowed",
    "unknown kid": "unknown key",
    "known kid, signed by another key": "signature",
    "no kid": "key id",
    "alg ES256 on an RSA key": "does not match its key",
    "RS512 (not allowed)": "algorithm not allowed",
    "critical header": "critical",
    "oversized": "malformed",
    "claims are not an object": "malformed",
}


@pytest.mark.parametrize("kind", ["external", "internal"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_forged_or_unusable_token_is_refused(kind, attack):
    token = ATTACKS[attack](kind)
    with pytest.raises(Unauthenticated, match=REFUSED_FOR[attack]) as refused:
        verify(kind, token)
    assert not token or token not in refused.value.reason


def test_the_internal_verifier_refuses_an_external_token_and_vice_versa():
    external = sign(claims_for("external", NOW), KEY)
    internal = sign(claims_for("internal", NOW), KEY)
    with pytest.raises(Unauthenticated, match="issuer"):
        verify("internal", external)
    with pytest.raises(Unauthenticated, match="issuer"):
        verify("external", internal)


def test_a_valid_external_token_passes_with_its_claims():
    claims = verify("external", sign(claims_for("external", NOW), KEY))
    assert claims["sub"] == "alice"
    assert claims["aud"] == EXTERNAL_AUDIENCE
    assert claims["client_id"] == "cli"


def test_a_valid_internal_token_gives_its_principal():
    token = sign(claims_for("internal", NOW, roles=["user", "admin"]), KEY)
    principal = verify("internal", token)
    assert principal == Principal("alice", frozenset({"user", "admin"}))
    assert principal.token == token
    assert token not in repr(principal)


def test_clock_skew_within_the_leeway_is_tolerated():
    # The clock of this test, not of the module's import: a busy machine may run it much later.
    now = int(time.time())
    token = sign(claims_for("internal", now - 1000, exp=now - 20, nbf=now + 20), KEY)
    assert verify("internal", token).sub == "alice"


def test_an_audience_list_containing_ours_is_accepted():
    token = sign(claims_for("internal", NOW, aud=["other", "shopmesh-internal"]), KEY)
    assert verify("internal", token).sub == "alice"


def test_malformed_roles_are_refused():
    with pytest.raises(Unauthenticated, match="roles"):
        verify("internal", sign(claims_for("internal", NOW, roles="admin"), KEY))


def test_es256_tokens_verify_with_an_ec_key():
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = jwk.construct(pem, "ES256")
    public = signer.public_key().to_dict() | {"kid": "ec-1", "use": "sig"}
    keys = MemoryKeys(KEY, VerificationKey.from_jwk(public))
    token = jws.sign(
        claims_for("internal", NOW), signer, headers={"kid": "ec-1"}, algorithm="ES256"
    )
    assert verify("internal", token, keys).sub == "alice"


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic YTpi", "Bearer", "Bearer ", "Bearer a b", "Token abc"],
)
def test_only_a_bearer_authorization_yields_a_token(header):
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive():
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"
