from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from services.common import metrics
from services.common.problem import problem_middleware


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def app() -> web.Application:
    application = web.Application(
        middlewares=[metrics.http_middleware("svc"), problem_middleware()]
    )

    async def order(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"]})

    application.router.add_get("/orders/{id}", order)
    return application


def call(path: str) -> int:
    async def go() -> int:
        async with TestClient(TestServer(app())) as client:
            return (await client.get(path)).status

    return asyncio.run(go())


def test_requests_are_counted_by_route_template_not_raw_path() -> None:
    labels = {"service": "svc", "route": "/orders/{id}", "method": "GET", "status": "200"}
    before = sample("shopmesh_requests_total", **labels)

    assert call("/orders/1") == 200
    assert call("/orders/2") == 200

    assert sample("shopmesh_requests_total", **labels) == before + 2
    assert sample("shopmesh_request_duration_seconds_count", service="svc",
                  route="/orders/{id}", method="GET") >= 2  # fmt: skip


def test_unmatched_paths_share_one_series_with_their_status() -> None:
    labels = {"service": "svc", "route": "unmatched", "method": "GET", "status": "404"}
    before = sample("shopmesh_requests_total", **labels)
    assert call("/nope/123") == 404
    assert call("/other") == 404
    assert sample("shopmesh_requests_total", **labels) == before + 2


def test_buckets_resolve_the_200_and_300_ms_targets() -> None:
    assert 0.2 in metrics.BUCKETS
    assert 0.3 in metrics.BUCKETS
