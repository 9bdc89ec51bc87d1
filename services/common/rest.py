"""The aiohttp application each REST service starts from."""

from __future__ import annotations

from aiohttp import web

from services.common.problem import ProblemKinds, problem_middleware


def rest_app(
    routes: web.RouteTableDef, problems: ProblemKinds, max_body_bytes: int
) -> web.Application:
    """`routes`, every error answered as problem+json (`problems`: the service's own domain
    errors over the common ones), request bodies up to `max_body_bytes`."""
    middlewares = [problem_middleware(problems)]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    app.add_routes(routes)
    return app
