"""The front end's files: plain ES modules, CSS and one HTML page, served as they are (no build
step), each with a strict Content-Security-Policy: nothing but this origin's own scripts,
styles and connections (the WebSocket's too), no inline code, no framing."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

STATIC_DIR = Path(__file__).with_name("static")
INDEX = STATIC_DIR / "index.html"
# The page's own routes are in its URL's fragment (#/orders/...): the server knows only the
# page itself and the OIDC redirect target.
PAGE_PATHS = ("/", "/callback")
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The OIDC code in /callback's query must not linger in a cache.
    "Cache-Control": "no-store",
}


def static_files() -> dict[str, Path]:
    """URL path -> file, for every file under static/ (read once: the set is fixed)."""
    return {
        "/static/" + path.relative_to(STATIC_DIR).as_posix(): path
        for path in sorted(STATIC_DIR.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def security_headers() -> Middleware:
    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return add_headers


def page_routes() -> list[web.RouteDef]:
    """GET routes for the page and each static file: a known list, so no path ever reaches the
    file system."""

    def serving(path: Path) -> Handler:
        body = path.read_bytes()
        content_type = CONTENT_TYPES[path.suffix]

        async def serve(_request: web.Request) -> web.Response:
            return web.Response(body=body, headers={"Content-Type": content_type})

        return serve

    table = [web.get(path, serving(INDEX)) for path in PAGE_PATHS]
    table += [web.get(url, serving(file)) for url, file in static_files().items()]
    return table
