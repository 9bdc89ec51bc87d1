"""services.common.auth around the verifier: the JWKS cache, the aiohttp middleware, the grpc.aio
interceptor, the authorization helpers and token forwarding. Fake JWKS fetches; the HTTP and
gRPC servers are in-process on loopback."""

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.auth.tokens import generate_signing_key, internal_claims, sign
from services.common.auth.interceptor import AuthInterceptor
from services.common.auth.jwks import Jwks, parse_jwks
from services.common.auth.jwt import verify_internal
from services.common.auth.middleware import auth_middleware, request_principal
from services.common.auth.outgoing import bearer_headers, bearer_metadata
from services.common.auth.principal import (
    Principal,
    Unauthenticated,
    current_principal,
    require_role,
    require_self_or_admin,
)
from services.common.errors import PermissionDenied
from services.common.problem import problem_middleware
from services.common.rpc import ErrorInterceptor

KEY = generate_signing_key(datetime.now(UTC))
NEW_KEY = generate_signing_key(datetime.now(UTC))


def token_for(sub="alice", roles=("user",), key=KEY):
    return sign(internal_claims(sub=sub, roles=roles, now=int(datetime.now(UTC).timestamp())), key)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeAuth:
    """Serves a JWKS document, counts fetches, and can be down."""

    def __init__(self, *keys):
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    async def fetch(self):
        self.fetches += 1
        if self.down:
            raise TimeoutError("auth is down")
        return {"keys": [key.public_jwk for key in self.keys]}


def jwks_for(auth, clock, **kwargs):
    return Jwks("http://127.0.0.1:1/auth/jwks", fetch=auth.fetch, clock=clock, **kwargs)


# --- the JWKS cache ------------------------------------------------------------------------


def test_the_first_lookup_fetches_and_later_ones_use_the_cache():
    async def go():
        auth, clock = FakeAuth(KEY), Clock()
        jwks = jwks_for(auth, clock)
        first = await jwks.key(KEY.kid)
        second = await jwks.key(KEY.kid)
        return first, second, auth.fetches

    first, second, fetches = asyncio.run(go())
    assert first.kid == second.kid == KEY.kid
    assert fetches == 1


def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval():
    async def go():
        auth, clock = FakeAuth(KEY), Clock()
        jwks = jwks_for(auth, clock, min_refetch_interval_s=5.0)
        await jwks.key(KEY.kid)
        clock.now += 5
        results = await asyncio.gather(*(jwks.key(f"bogus-{i}") for i in range(500)))
        clock.now += 1
        results += [await jwks.key(f"more-{i}") for i in range(100)]
        during = auth.fetches
        clock.now += 5
        await jwks.key("after-the-interval")
        return results, during, auth.fetches

    results, during, after = asyncio.run(go())
    assert all(result is None for result in results)
    assert during == 2  # the first fetch, then one refetch for the whole flood
    assert after == 3


def test_a_key_added_by_rotation_is_found_by_refetching():
    async def go():
        auth, clock = FakeAuth(KEY), Clock()
        jwks = jwks_for(auth, clock)
        await jwks.key(KEY.kid)
        auth.keys.append(NEW_KEY)
        clock.now += 5
        return await jwks.key(NEW_KEY.kid), await jwks.key(KEY.kid)

    new, old = asyncio.run(go())
    assert new.kid == NEW_KEY.kid
    assert old.kid == KEY.kid


def test_known_keys_survive_auth_being_down():
    async def go():
        auth, clock = FakeAuth(KEY), Clock()
        jwks = jwks_for(auth, clock, max_age_s=60)
        await jwks.key(KEY.kid)
        auth.down = True
        clock.now += 3600
        refreshed = await jwks.refresh()
        principal = await verify_internal(token_for(), jwks)
        return refreshed, principal, jwks.kids

    refreshed, principal, kids = asyncio.run(go())
    assert refreshed is False
    assert principal.sub == "alice"
    assert kids == {KEY.kid}


def test_a_stale_key_set_is_refreshed_in_the_background():
    async def go():
        auth, clock = FakeAuth(KEY), Clock()
        jwks = jwks_for(auth, clock, max_age_s=300)
        await jwks.key(KEY.kid)
        clock.now += 301
        found = await jwks.key(KEY.kid)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await jwks.close()
        return found, auth.fetches

    found, fetches = asyncio.run(go())
    assert found is not None
    assert fetches == 2


def test_unusable_jwks_entries_are_skipped():
    document = {
        "keys": [
            KEY.public_jwk,
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"},
            {**KEY.public_jwk, "kid": "no-alg", "alg": None},
            {**KEY.public_jwk, "kid": "private", "d": "AQAB"},
            {**KEY.public_jwk, "kid": "enc", "use": "enc"},
            {**KEY.public_jwk, "kid": "ec-claimed", "alg": "ES256"},
            {k: v for k, v in KEY.public_jwk.items() if k != "kid"},
            "not an object",
        ]
    }
    assert set(parse_jwks(document)) == {KEY.kid}


# --- authorization helpers -----------------------------------------------------------------

ALICE = Principal("alice", frozenset({"user"}), token="alice-token")
ADMIN = Principal("admin", frozenset({"user", "admin"}), token="admin-token")


def test_require_role_accepts_any_of_the_roles():
    require_role(ADMIN, "admin")
    require_role(ALICE, "admin", "user")
    with pytest.raises(PermissionDenied):
        require_role(ALICE, "admin")


def test_require_self_or_admin():
    require_self_or_admin(ALICE, "alice")
    require_self_or_admin(ADMIN, "alice")
    with pytest.raises(PermissionDenied):
        require_self_or_admin(ALICE, "bob")


def test_the_callers_token_is_forwarded():
    assert bearer_headers(ALICE) == {"Authorization": "Bearer alice-token"}
    assert bearer_metadata(ALICE) == (("authorization", "Bearer alice-token"),)


def test_there_is_no_principal_outside_an_authenticated_rpc():
    with pytest.raises(Unauthenticated):
        current_principal()


# --- aiohttp middleware --------------------------------------------------------------------


class StaticKeys:
    async def key(self, kid):
        return KEY.verification_key if kid == KEY.kid else None


def http_app():
    app = web.Application(middlewares=[problem_middleware(), auth_middleware(StaticKeys())])
    routes = web.RouteTableDef()

    @routes.get("/openapi.yaml")
    async def spec(request):
        return web.json_response({"openapi": "3.1.0"})

    @routes.get("/users/{id}")
    async def user(request):
        principal = request_principal(request)
        require_self_or_admin(principal, request.match_info["id"])
        return web.json_response({"sub": principal.sub, "roles": sorted(principal.roles)})

    app.add_routes(routes)
    return app


def http_call(path, headers=None):
    async def go():
        async with TestClient(TestServer(http_app())) as client:
            resp = await client.get(path, headers=headers or {})
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    return asyncio.run(go())


def test_a_request_without_a_token_is_401_problem_with_www_authenticate():
    status, headers, body = http_call("/users/alice")
    assert status == 401
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["type"] == "/problems/unauthenticated"
    assert body["detail"] == "missing bearer token"


def test_a_request_with_a_bad_token_is_401():
    forged = token_for(key=NEW_KEY)
    status, _, body = http_call("/users/alice", {"Authorization": f"Bearer {forged}"})
    assert status == 401
    assert "unknown key" in body["detail"]


def test_exempt_paths_need_no_token():
    assert http_call("/openapi.yaml")[0] == 200


def test_the_principal_reaches_the_handler():
    status, _, body = http_call("/users/alice", {"Authorization": f"Bearer {token_for()}"})
    assert (status, body) == (200, {"sub": "alice", "roles": ["user"]})


def test_permission_denied_is_a_403_problem():
    status, headers, body = http_call("/users/bob", {"Authorization": f"Bearer {token_for()}"})
    assert status == 403
    assert headers["Content-Type"] == "application/problem+json"
    assert body["type"] == "/problems/forbidden"


# --- grpc.aio interceptor ------------------------------------------------------------------


def _identity(data):
    return data


async def whoami(request, context):
    principal = current_principal()
    if request == b"admin-only":
        require_role(principal, "admin")
    forwarded = dict(bearer_metadata())["authorization"]
    return f"{principal.sub}|{forwarded == 'Bearer ' + principal.token}".encode()


async def count(request, context):
    principal = current_principal()
    for i in range(3):
        yield f"{principal.sub}:{i}".encode()


async def health_check(request, context):
    return b"SERVING"


def _handlers():
    codecs = {"request_deserializer": _identity, "response_serializer": _identity}
    return [
        grpc.method_handlers_generic_handler(
            "test.Demo",
            {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, **codecs),
                "Count": grpc.unary_stream_rpc_method_handler(count, **codecs),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {"Check": grpc.unary_unary_rpc_method_handler(health_check, **codecs)},
        ),
    ]


def grpc_call(method, request=b"", token=None, streaming=False):
    async def go():
        server = grpc.aio.server(interceptors=[ErrorInterceptor(), AuthInterceptor(StaticKeys())])
        server.add_generic_rpc_handlers(_handlers())
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                if streaming:
                    call = channel.unary_stream(method)(request, metadata=metadata, timeout=5)
                    return grpc.StatusCode.OK, [item async for item in call]
                reply = await channel.unary_unary(method)(request, metadata=metadata, timeout=5)
                return grpc.StatusCode.OK, reply
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()
        finally:
            await server.stop(0)

    return asyncio.run(go())


def test_an_rpc_without_a_token_is_unauthenticated():
    assert grpc_call("/test.Demo/WhoAmI") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing bearer token",
    )


def test_an_rpc_with_a_forged_token_is_unauthenticated():
    code, details = grpc_call("/test.Demo/WhoAmI", token=token_for(key=NEW_KEY))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key" in details


def test_the_principal_and_its_token_reach_the_handler():
    assert grpc_call("/test.Demo/WhoAmI", token=token_for()) == (grpc.StatusCode.OK, b"alice|True")


def test_permission_denied_becomes_permission_denied():
    code, _ = grpc_call("/test.Demo/WhoAmI", b"admin-only", token=token_for())
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call("/test.Demo/WhoAmI", b"admin-only", token=token_for("root", ["admin"]))[0] == (
        grpc.StatusCode.OK
    )


def test_streaming_rpcs_are_authenticated_too():
    assert grpc_call("/test.Demo/Count", streaming=True)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_call("/test.Demo/Count", token=token_for(), streaming=True) == (
        grpc.StatusCode.OK,
        [b"alice:0", b"alice:1", b"alice:2"],
    )


def test_health_checks_need_no_token():
    assert grpc_call("/grpc.health.v1.Health/Check") == (grpc.StatusCode.OK, b"SERVING")
