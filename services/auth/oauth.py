"""The token endpoint's protocol: parsing grant requests and OAuth 2.0 error responses.

Errors follow RFC 6749 §5.2 (and RFC 8693 §2.2.2 for token exchange): a JSON body
`{"error": ..., "error_description": ...}`, 400 for a bad request or grant, 401 with
`WWW-Authenticate: Basic` when client authentication fails. Never problem+json here.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from services.common.fields import character_error, single_parameter

GRANT_PASSWORD = "password"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_TYPES = (
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_PASSWORD,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
)

TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"

AUTH_METHOD_BASIC = "client_secret_basic"
AUTH_METHOD_POST = "client_secret_post"

# A client that names no client_id (a person with curl or the mesh CLI) gets this one in its
# token's client_id claim; it has no secret and can only use the password grant.
PUBLIC_CLIENT_ID = "shopmesh-public"

SCOPES = ("shopmesh", "openid")
DEFAULT_SCOPE = ("shopmesh",)

CLAIMS = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "scope",
    "client_id",
    "nonce",
    "auth_time",
)

MAX_PARAMETER_LENGTH = 8192
BASIC_REALM = 'Basic realm="shopmesh"'


class OAuthError(Exception):
    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str = "client authentication failed") -> OAuthError:
    return OAuthError(
        "invalid_client", description, status=401, headers={"WWW-Authenticate": BASIC_REALM}
    )


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def temporarily_unavailable(description: str) -> OAuthError:
    return OAuthError(
        "temporarily_unavailable", description, status=503, headers={"Retry-After": "1"}
    )


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str = field(repr=False)
    method: str


@dataclass(frozen=True)
class PasswordGrant:
    username: str
    password: str = field(repr=False)
    scope: tuple[str, ...]
    client: ClientCredentials | None


@dataclass(frozen=True)
class ClientCredentialsGrant:
    client: ClientCredentials
    scope: tuple[str, ...]


@dataclass(frozen=True)
class TokenExchangeGrant:
    subject_token: str = field(repr=False)
    client: ClientCredentials | None


@dataclass(frozen=True)
class AuthorizationCodeGrant:
    """A public client's code (with its PKCE verifier): services/auth/sign_in.py."""

    client_id: str
    code: str = field(repr=False)
    redirect_uri: str
    code_verifier: str = field(repr=False)


@dataclass(frozen=True)
class RefreshTokenGrant:
    client_id: str
    refresh_token: str = field(repr=False)


Grant = (
    PasswordGrant
    | ClientCredentialsGrant
    | TokenExchangeGrant
    | AuthorizationCodeGrant
    | RefreshTokenGrant
)

Form = Mapping[str, Sequence[str]]


def parse_token_request(form: Form, authorization: str | None) -> Grant:
    """The grant a token request asks for; OAuthError naming what is wrong otherwise.

    `form` maps each parameter to all its values (a parameter sent twice is an error).
    """
    grant_type = _single(form, "grant_type")
    if grant_type is None:
        raise invalid_request("grant_type is required")
    if grant_type in (GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN):
        return _public_client_grant(grant_type, form, authorization)
    client = parse_client(form, authorization)
    if grant_type == GRANT_PASSWORD:
        username = _single(form, "username")
        password = _single(form, "password")
        if not username or password is None:
            raise invalid_request("username and password are required")
        return PasswordGrant(username, password, parse_scope(_single(form, "scope")), client)
    if grant_type == GRANT_CLIENT_CREDENTIALS:
        if client is None:
            raise invalid_client("client_credentials requires client authentication")
        return ClientCredentialsGrant(client, parse_scope(_single(form, "scope")))
    if grant_type == GRANT_TOKEN_EXCHANGE:
        return _token_exchange(form, client)
    raise OAuthError(
        "unsupported_grant_type", f"grant_type must be one of {', '.join(GRANT_TYPES)}"
    )


def _public_client_grant(
    grant_type: str, form: Form, authorization: str | None
) -> AuthorizationCodeGrant | RefreshTokenGrant:
    """The grants of public clients (no secret: RFC 6749 §2.3 does not apply to them)."""
    if authorization is not None or "client_secret" in form:
        raise invalid_client(f"{grant_type} is for public clients, which have no secret")
    client_id = _single(form, "client_id")
    if not client_id:
        raise invalid_request("client_id is required")
    if grant_type == GRANT_REFRESH_TOKEN:
        refresh_token = _single(form, "refresh_token")
        if not refresh_token:
            raise invalid_request("refresh_token is required")
        return RefreshTokenGrant(client_id, refresh_token)
    code = _single(form, "code")
    redirect_uri = _single(form, "redirect_uri")
    code_verifier = _single(form, "code_verifier")
    if not code or not redirect_uri or not code_verifier:
        raise invalid_request("code, redirect_uri and code_verifier are required")
    return AuthorizationCodeGrant(client_id, code, redirect_uri, code_verifier)


def _token_exchange(form: Form, client: ClientCredentials | None) -> TokenExchangeGrant:
    subject_token = _single(form, "subject_token")
    if not subject_token:
        raise invalid_request("subject_token is required")
    subject_token_type = _single(form, "subject_token_type")
    if subject_token_type != TOKEN_TYPE_ACCESS_TOKEN:
        raise invalid_request(f"subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}")
    if "actor_token" in form:
        raise invalid_request("actor_token is not supported")
    requested = _single(form, "requested_token_type")
    if requested is not None and requested != TOKEN_TYPE_JWT:
        raise invalid_request(f"requested_token_type must be {TOKEN_TYPE_JWT}")
    audience = _single(form, "audience")
    if audience is not None and audience != "shopmesh-internal":
        raise OAuthError("invalid_target", "the only audience available is shopmesh-internal")
    return TokenExchangeGrant(subject_token, client)


def parse_client(form: Form, authorization: str | None) -> ClientCredentials | None:
    """Client authentication from HTTP Basic (RFC 6749 §2.3.1) or the form, not both.

    A client_id without a secret is only allowed when it is the public client's (or absent).
    """
    form_id = _single(form, "client_id")
    form_secret = _single(form, "client_secret")
    if authorization is not None:
        if form_secret is not None:
            raise invalid_request("use one client authentication method, not two")
        client = parse_basic(authorization)
        if form_id is not None and form_id != client.client_id:
            raise invalid_request("client_id does not match the authenticated client")
        return client
    if form_secret is not None:
        if not form_id:
            raise invalid_request("client_secret needs a client_id")
        return ClientCredentials(form_id, form_secret, AUTH_METHOD_POST)
    if form_id is not None and form_id != PUBLIC_CLIENT_ID:
        raise invalid_client(f"client {form_id!r} must authenticate")
    return None


def parse_basic(authorization: str) -> ClientCredentials:
    """The client of an `Authorization: Basic` header; invalid_client if it is not one."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client("client authentication must use HTTP Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII header value
        raise invalid_client("malformed HTTP Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    unstorable = character_error(client_id + secret, allowed="\t") is not None
    if not colon or not client_id or unstorable:
        raise invalid_client("malformed HTTP Basic credentials")
    return ClientCredentials(client_id, secret, AUTH_METHOD_BASIC)


def parse_scope(raw: str | None) -> tuple[str, ...]:
    """The requested scopes (space-separated), or the default; invalid_scope for unknown ones."""
    if raw is None or not raw.strip():
        return DEFAULT_SCOPE
    scopes = tuple(dict.fromkeys(raw.split()))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise OAuthError(
            "invalid_scope", f"unknown scope {unknown[0]!r}; known: {' '.join(SCOPES)}"
        )
    return scopes


def _single(form: Form, name: str) -> str | None:
    try:
        # RFC 6749 Appendix A: parameter values hold no control characters but TAB.
        return single_parameter(form, name, max_length=MAX_PARAMETER_LENGTH, allowed="\t")
    except ValueError as exc:
        raise invalid_request(str(exc)) from None


def discovery_document(issuer: str) -> dict[str, object]:
    """OpenID Provider metadata (OIDC Discovery 1.0 / RFC 8414); URLs are under `issuer`."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "end_session_endpoint": f"{issuer}/logout",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [AUTH_METHOD_BASIC, AUTH_METHOD_POST, "none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": [AUTH_METHOD_BASIC],
        "scopes_supported": list(SCOPES),
        "claims_supported": list(CLAIMS),
    }
