"""Debian's Chromium driven by Playwright (PyPI; a dev dependency), for the browser tests
(tests/browser) and `mesh screenshots`. Playwright's own browser download cannot work here: it
launches /usr/bin/chromium by its path (provisioned by `mesh install`).

The edge's certificate is trusted by its key alone (`--ignore-certificate-errors-spki-list`,
which Chromium honours with a user data dir of the caller's): every other certificate is still
checked, where `ignore_https_errors` would accept any. A fresh user data dir each launch: no
cookies, cache or state from another run.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mesh.runtime import demo
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import CHROMIUM_BIN
from mesh.runtime.tls import edge_certs

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A phone's width is the narrowest the page is made for; screenshots use a desktop's.
VIEWPORT = {"width": 1100, "height": 800}
# Placing an order answers within orders' payment deadline (2.5 s) and retries.
ORDER_TIMEOUT_MS = 15_000
# Spans reach Jaeger from each process on its own 5 s timer.
TRACE_TIMEOUT_MS = 45_000


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate: what Chromium's SPKI list takes."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium_args(state: StateDir) -> list[str]:
    edge_key = spki_hash(edge_certs(state).server_cert.read_bytes())
    return [*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={edge_key}"]


@contextmanager
def chromium(state: StateDir) -> Iterator[Callable[[], BrowserContext]]:
    """A launcher of Chromium contexts trusting the edge of `state`'s mesh, each with a fresh
    user data dir (its own cookies: another person's browser); all closed at the end."""
    from playwright.sync_api import sync_playwright

    with ExitStack() as stack:
        playwright = stack.enter_context(sync_playwright())

        def launch() -> BrowserContext:
            profile = stack.enter_context(tempfile.TemporaryDirectory(prefix="shopmesh-chromium-"))
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM_BIN),
                headless=True,
                args=chromium_args(state),
                viewport=VIEWPORT,  # type: ignore[arg-type]
            )
            stack.callback(context.close)
            return context

        yield launch


@contextmanager
def browser_context(state: StateDir) -> Iterator[BrowserContext]:
    """A Chromium context with a fresh user data dir, trusting the edge of `state`'s mesh."""
    with chromium(state) as launch:
        yield launch()


def sign_in(page: Page, edge_url: str, user: str, password: str) -> None:
    """Open the page signed out, follow "Sign in" to auth's login page and submit it."""
    page.goto(f"{edge_url}/")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def place_order(page: Page, *, pay_later: bool) -> str:
    """Put a book in the cart and place the order; the order's id (its detail page's)."""
    page.goto(page.url.split("#", 1)[0] + "#/shop")
    page.get_by_role("button", name="Add Book to cart").click()
    page.get_by_label("Pay later", exact=False).set_checked(pay_later)
    page.locator("#place-order").click()
    page.wait_for_url("**/#/orders/*", timeout=ORDER_TIMEOUT_MS)
    return page.url.rsplit("/", 1)[1]


def take_screenshots(state: StateDir, edge_url: str, folder: Path) -> list[Path]:
    """The main pages of a running mesh, as a demo user and the admin see them."""
    folder.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(page: Page, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with browser_context(state) as context:
        page = context.new_page()
        page.goto(f"{edge_url}/")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Username").fill("alice")
        shot(page, "web-sign-in")
        page.get_by_label("Password").fill(demo.password(state, "alice"))
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Add Book to cart").wait_for()
        page.get_by_role("button", name="Add Book to cart").click()
        page.get_by_role("button", name="Add Pen to cart").click()
        shot(page, "web-shop")
        place_order(page, pay_later=True)
        page.get_by_test_id("order-status").filter(has_text="PAID").wait_for(
            timeout=TRACE_TIMEOUT_MS
        )
        page.locator(".waterfall li[data-service=notifications]").first.wait_for(
            timeout=TRACE_TIMEOUT_MS
        )
        shot(page, "web-order")
        page.get_by_role("link", name="My orders").click()
        page.locator("tbody tr[data-order]").first.wait_for()
        shot(page, "web-orders")
    with browser_context(state) as context:
        page = context.new_page()
        sign_in(page, edge_url, "admin", demo.password(state, "admin"))
        page.get_by_role("link", name="Admin").click()
        page.locator("#health-title ~ table tbody tr").first.wait_for()
        shot(page, "web-admin")
    return shots
