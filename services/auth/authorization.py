"""The authorization endpoint's protocol (OAuth 2.0 authorization code with PKCE, OIDC Core):
the registered public clients, parsing `GET /auth/authorize`, its error redirects and the PKCE
check. Plain Python, no I/O.

An error is only ever sent back to a redirect_uri once the client is known and the redirect_uri
is one it registered (RFC 6749 §4.1.2.1): otherwise auth would redirect anywhere it is told.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from services.common.fields import single_parameter

RESPONSE_TYPE_CODE = "code"
PKCE_S256 = "S256"
SCOPE_OPENID = "openid"
SCOPES = (SCOPE_OPENID, "shopmesh")
PROMPT_NONE = "none"
PROMPT_LOGIN = "login"

# The browser front end (issue #17): a public client, signed in with code + PKCE only.
WEB_CLIENT_ID = "shopmesh-web"
WEB_CALLBACK_PATH = "/callback"
WEB_ACCESS_TOKEN_TTL_S = 5 * 60

# RFC 7636 §4.1-4.2: a verifier is 43-128 unreserved characters; an S256 challenge is the
# base64url (unpadded) SHA-256 of one, 43 characters; we take the same range for both.
_CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43,128}")
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
MAX_PARAMETER_LENGTH = 2048

Query = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class PublicClient:
    """A client without a secret (a browser page): it proves itself with PKCE and by the
    redirect URIs registered for it, matched exactly."""

    client_id: str
    redirect_uris: frozenset[str]
    post_logout_redirect_uris: frozenset[str]
    access_token_ttl_s: int


def web_client(origins: Sequence[str]) -> PublicClient:
    """`shopmesh-web` at each public origin of the edge (e.g. https://127.0.0.1:8443)."""
    return PublicClient(
        client_id=WEB_CLIENT_ID,
        redirect_uris=frozenset(f"{origin}{WEB_CALLBACK_PATH}" for origin in origins),
        post_logout_redirect_uris=frozenset(f"{origin}/" for origin in origins),
        access_token_ttl_s=WEB_ACCESS_TOKEN_TTL_S,
    )


@dataclass(frozen=True)
class AuthorizationRequest:
    """A valid authorization request, as the client sent it."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str
    nonce: str
    code_challenge: str
    prompt: str | None = None


class UnsafeToRedirect(Exception):
    """Unknown client or unregistered redirect_uri: told to the user on a page, never
    redirected."""


class AuthorizationError(Exception):
    """An error the client hears about at its redirect_uri (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        return redirect_location(self.redirect_uri, params)


def redirect_location(redirect_uri: str, params: Mapping[str, str]) -> str:
    separator = "&" if "?" in redirect_uri else "?"
    return f"{redirect_uri}{separator}{urlencode(params)}"


def parse_authorize(query: Query, clients: Mapping[str, PublicClient]) -> AuthorizationRequest:
    """The request `query` makes; UnsafeToRedirect or AuthorizationError naming what is wrong."""
    try:
        client_id = _single(query, "client_id")
        redirect_uri = _single(query, "redirect_uri")
    except ValueError as exc:
        raise UnsafeToRedirect(str(exc)) from None
    client = clients.get(client_id or "")
    if client is None:
        raise UnsafeToRedirect("unknown client_id")
    if redirect_uri not in client.redirect_uris:
        raise UnsafeToRedirect("redirect_uri is not registered for this client")

    state: str | None = None

    def refuse(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri, state)

    try:
        state = _single(query, "state")
        response_type = _single(query, "response_type")
        method = _single(query, "code_challenge_method")
        challenge = _single(query, "code_challenge")
        nonce = _single(query, "nonce")
        raw_scope = _single(query, "scope")
        prompt = _single(query, "prompt")
    except ValueError as exc:
        raise refuse("invalid_request", str(exc)) from None
    if not state:
        raise refuse("invalid_request", "state is required")
    if response_type != RESPONSE_TYPE_CODE:
        raise refuse("unsupported_response_type", "response_type must be code")
    if method != PKCE_S256:
        raise refuse("invalid_request", "code_challenge_method must be S256")
    if challenge is None or not _CODE_CHALLENGE.fullmatch(challenge):
        raise refuse("invalid_request", "code_challenge must be 43-128 base64url characters")
    if not nonce:
        raise refuse("invalid_request", "nonce is required")
    scope = tuple(dict.fromkeys((raw_scope or "").split()))
    if SCOPE_OPENID not in scope or any(s not in SCOPES for s in scope):
        raise refuse("invalid_scope", f"scope must hold openid, and only: {' '.join(SCOPES)}")
    if prompt not in (None, PROMPT_NONE, PROMPT_LOGIN):
        raise refuse("invalid_request", "prompt must be none or login")
    return AuthorizationRequest(
        client.client_id, redirect_uri, scope, state, nonce, challenge, prompt
    )


def pkce_matches(code_verifier: str, code_challenge: str) -> bool:
    """RFC 7636 §4.6, S256: BASE64URL(SHA256(verifier)) == challenge (constant time)."""
    if not _CODE_VERIFIER.fullmatch(code_verifier):
        return False
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return hmac.compare_digest(computed, code_challenge)


def _single(query: Query, name: str) -> str | None:
    return single_parameter(query, name, max_length=MAX_PARAMETER_LENGTH)
