import asyncio
import json
import logging

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common import errors
from services.common.problem import PROBLEM_CONTENT_TYPE, Problem, ProblemKind, problem_middleware


async def raises_problem(_request):
    raise Problem(
        422,
        "Invalid order",
        "items[0].quantity must be at least 1",
        type="/problems/validation",
        errors=[{"field": "items[0].quantity", "message": "must be at least 1"}],
        headers={"Retry-After": "1"},
    )


async def crashes(_request):
    raise RuntimeError("password=hunter2 in an internal message")


LOST_DATABASE = {
    "closed": asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "released": asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    "broken": asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
}


async def loses_the_database(request):
    raise LOST_DATABASE[request.query["how"]]


async def redirects(_request):
    raise web.HTTPFound("/elsewhere")


async def echo(request):
    return web.Response(body=await request.read())


def call(method, path, **kwargs):
    async def go():
        app = web.Application(middlewares=[problem_middleware()], client_max_size=16)
        app.router.add_get("/problem", raises_problem)
        app.router.add_get("/crash", crashes)
        app.router.add_get("/database", loses_the_database)
        app.router.add_get("/redirect", redirects)
        app.router.add_post("/echo", echo)
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, allow_redirects=False, **kwargs)
            return resp.status, dict(resp.headers), await resp.read()

    return asyncio.run(go())


def test_problem_is_rendered_as_problem_json_with_instance_and_errors():
    status, headers, body = call("GET", "/problem")
    assert status == 422
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert headers["Retry-After"] == "1"
    assert json.loads(body) == {
        "type": "/problems/validation",
        "title": "Invalid order",
        "status": 422,
        "detail": "items[0].quantity must be at least 1",
        "instance": "/problem",
        "errors": [{"field": "items[0].quantity", "message": "must be at least 1"}],
    }


def test_problem_without_detail_or_errors_omits_them():
    assert Problem(404, "Not Found").to_dict("/x") == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "instance": "/x",
    }


def test_unknown_route_is_a_404_problem():
    status, headers, body = call("GET", "/missing")
    assert status == 404
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert json.loads(body)["title"] == "Not Found"
    assert json.loads(body)["instance"] == "/missing"


def test_wrong_method_is_a_405_problem_that_keeps_allow():
    status, headers, body = call("PUT", "/problem")
    assert status == 405
    assert "GET" in headers["Allow"]
    assert json.loads(body)["title"] == "Method Not Allowed"


def test_too_large_body_is_a_413_problem():
    status, headers, body = call("POST", "/echo", data=b"x" * 17)
    assert status == 413
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert "16" in json.loads(body)["detail"]


def test_unexpected_error_is_a_500_problem_without_internals(caplog):
    with caplog.at_level(logging.ERROR):
        status, headers, body = call("GET", "/crash")
    assert status == 500
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert b"hunter2" not in body
    assert b"RuntimeError" not in body
    assert json.loads(body)["instance"] == "/crash"
    assert any(record.exc_info for record in caplog.records)


@pytest.mark.parametrize("how", sorted(LOST_DATABASE))
def test_a_lost_database_is_a_503_problem_to_retry_not_a_500(caplog, how):
    with caplog.at_level(logging.WARNING):
        status, headers, body = call("GET", f"/database?how={how}")
    assert status == 503
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert headers["Retry-After"] == "1"
    assert json.loads(body)["type"] == "/problems/unavailable"
    assert not any(record.exc_info for record in caplog.records), "a warning, not a traceback"


def test_redirects_pass_through_untouched():
    status, headers, _ = call("GET", "/redirect")
    assert status == 302
    assert headers["Location"] == "/elsewhere"


# --- domain errors: one mapping, in the middleware ------------------------------------------


class OutOfStock(errors.FailedPrecondition):
    """A service's own error, with a problem kind of its own."""


class Sold(OutOfStock):
    """A subclass without a kind: its nearest base's kind applies."""


RAISED = {
    "unavailable": errors.Unavailable("stock did not answer; retry later"),
    "forbidden": errors.PermissionDenied("only the owner may do this"),
    "invalid": errors.InvalidArgument("quantity", "must be positive"),
    "out-of-stock": OutOfStock("nothing left"),
    "sold": Sold("sold out"),
    "bare": errors.DomainError("a domain error no kind describes"),
}
KINDS = {OutOfStock: ProblemKind(409, "Out of stock", "/problems/out-of-stock")}


def raised(kind, kinds=KINDS):
    async def raises(_request):
        raise RAISED[kind]

    async def go():
        app = web.Application(middlewares=[problem_middleware(kinds)])
        app.router.add_get("/stock", raises)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/stock")
            return resp.status, dict(resp.headers), json.loads(await resp.read())

    return asyncio.run(go())


def test_a_common_domain_error_is_its_common_problem_with_its_message_as_detail():
    status, headers, body = raised("unavailable")
    assert (status, headers["Retry-After"]) == (503, "1")
    assert body == {
        "type": "/problems/unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": "stock did not answer; retry later",
        "instance": "/stock",
    }
    assert raised("forbidden")[2]["type"] == "/problems/forbidden"


def test_the_fields_of_an_error_are_the_problems_errors():
    status, _, body = raised("invalid")
    assert status == 422
    assert body["errors"] == [{"field": "quantity", "message": "must be positive"}]


def test_a_services_own_error_is_the_problem_of_its_kind_and_its_subclasses_too():
    for kind in ("out-of-stock", "sold"):
        status, _, body = raised(kind)
        assert (status, body["title"], body["type"]) == (
            409,
            "Out of stock",
            "/problems/out-of-stock",
        )
    assert raised("out-of-stock", kinds={})[2]["title"] == "Conflict"


def test_a_domain_error_no_kind_describes_is_a_500(caplog):
    status, _, body = raised("bare")
    assert (status, body["title"]) == (500, "Internal Server Error")
