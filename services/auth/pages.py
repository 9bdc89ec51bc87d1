"""The HTML auth shows a person: the login page, the error page and the signed-out page.

Self-contained (no external assets, no script); the one stylesheet is inline and allowed by
its hash in a strict Content-Security-Policy, so nothing else can run or load on these pages.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from urllib.parse import urlsplit

from aiohttp import web

_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1b1f24;background:#f3f4f6}
main{max-width:24rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem}
h1{font-size:1.4rem;margin:0 0 1rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input{width:100%;padding:.6rem;font:inherit;border:1px solid #6b7280;border-radius:.3rem}
input:focus,button:focus{outline:3px solid #2563eb;outline-offset:1px}
button{margin-top:1.25rem;width:100%;padding:.7rem;font:inherit;font-weight:600;color:#fff;
background:#1d4ed8;border:0;border-radius:.3rem;cursor:pointer}
.error{padding:.6rem;border-left:4px solid #b91c1c;background:#fef2f2;color:#7f1d1d}
@media (max-width:26rem){main{margin:0;border-radius:0;min-height:100vh}}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

HTML_CONTENT_TYPE = "text/html"


def _headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    form_action = " ".join(("'self'", *form_targets))
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · shopmesh</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def login_page(
    request_id: str,
    redirect_uri: str,
    *,
    status: int = 200,
    message: str | None = None,
    username: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The login form for the pending request `request_id`; after it the browser is
    redirected to `redirect_uri`'s origin (allowed by the CSP's form-action)."""
    alert = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body = (
        "<h1>Sign in to shopmesh</h1>"
        f"{alert}"
        '<form method="post" action="/auth/login">'
        f'<input type="hidden" name="request" value="{escape(request_id)}">'
        '<label for="username">Username</label>'
        '<input id="username" name="username" type="text" autocomplete="username" '
        f'autocapitalize="none" spellcheck="false" required value="{escape(username)}">'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button>'
        "</form>"
    )
    parts = urlsplit(redirect_uri)
    return web.Response(
        status=status,
        text=_document("Sign in", body),
        content_type=HTML_CONTENT_TYPE,
        headers=_headers((f"{parts.scheme}://{parts.netloc}",)) | (headers or {}),
    )


def error_page(status: int, title: str, detail: str) -> web.Response:
    body = f'<h1>{escape(title)}</h1><p role="alert">{escape(detail)}</p>'
    return web.Response(
        status=status,
        text=_document(title, body),
        content_type=HTML_CONTENT_TYPE,
        headers=_headers(),
    )


def signed_out_page(headers: dict[str, str] | None = None) -> web.Response:
    body = "<h1>Signed out</h1><p>You are signed out of shopmesh.</p>"
    return web.Response(
        text=_document("Signed out", body),
        content_type=HTML_CONTENT_TYPE,
        headers=_headers() | (headers or {}),
    )
