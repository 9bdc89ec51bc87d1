"""Wiring: the page and its files at /, the BFF at /web/api (a sub-application, the only part
that needs a token), the upstream clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from services.common.auth.middleware import install_internal_auth
from services.common.config import ServiceSettings
from services.common.problem import problem_middleware
from services.web import api
from services.web.admin import ConsulAdmin, UsersAdmin
from services.web.clients import JaegerClient, NotificationsClient, OrdersClient, PaymentsClient
from services.web.pages import page_routes, security_headers

MAX_BODY_BYTES = 16 * 1024
API_PREFIX = "/web/api"
# Jaeger's query API (mesh/wiring.py sets it where the placement runs Jaeger).
JAEGER_URL_VARIABLE = "SHOPMESH_WEB_JAEGER_URL"
# Jaeger's UI where the browser reaches it, set where Jaeger has one (mesh/compose/document.py):
# the trace view links to it.
JAEGER_UI_URL_VARIABLE = "SHOPMESH_WEB_JAEGER_UI_URL"


def web_url(variable: str, value: str | None) -> str | None:
    """An http(s) address from the environment, or None when unset; anything else stops the
    start (the page puts it in a link)."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{variable} must be an http(s) URL, got {value!r}")
    return value


def http_app() -> tuple[web.Application, web.Application]:
    """The application and its BFF sub-application, without clients or authentication: every
    error is problem+json, every answer has the security headers."""
    app = web.Application(
        middlewares=[problem_middleware(api.PROBLEMS), security_headers()],
        client_max_size=MAX_BODY_BYTES,
    )
    app.add_routes(page_routes())
    bff = web.Application(client_max_size=MAX_BODY_BYTES)
    bff.add_routes(api.routes)
    return app, bff


def create_app(settings: ServiceSettings) -> web.Application:
    app, bff = http_app()
    install_internal_auth(bff, settings, exempt=())
    jaeger_url = os.environ.get(JAEGER_URL_VARIABLE) or None
    bff[api.JAEGER_UI] = web_url(JAEGER_UI_URL_VARIABLE, os.environ.get(JAEGER_UI_URL_VARIABLE))

    async def clients(bff: web.Application) -> AsyncIterator[None]:
        bff[api.ORDERS] = OrdersClient(settings.upstream_port("orders"))
        bff[api.PAYMENTS] = PaymentsClient(settings.upstream_port("payments"))
        bff[api.NOTIFICATIONS] = NotificationsClient(settings.upstream_port("notifications"))
        bff[api.USERS] = UsersAdmin(settings.upstream_port("users"))
        bff[api.JAEGER] = JaegerClient(jaeger_url)
        bff[api.CONSUL] = ConsulAdmin(
            settings.consul_http_addr, settings.consul_token, settings.consul_tls()
        )
        yield
        await bff[api.ORDERS].close()
        await bff[api.PAYMENTS].close()
        await bff[api.NOTIFICATIONS].close()
        await bff[api.USERS].close()
        await bff[api.JAEGER].close()
        await bff[api.CONSUL].close()

    bff.cleanup_ctx.append(clients)
    app.add_subapp(API_PREFIX, bff)
    return app
