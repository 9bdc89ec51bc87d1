"""Fixtures of the browser tests: Debian's Chromium (provisioned by `mesh install`) driven by
Playwright against the real native mesh (tests/conftest.py starts it), a fresh profile each."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Page

from mesh.runtime.browser import browser_context
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology


@pytest.fixture(scope="session")
def edge_url(topology: Topology) -> str:
    """The page's address: the edge's TLS listener (HTTP/1.1 and HTTP/2)."""
    return f"https://{topology.bind_host}:{topology.edge.https_port}"


@pytest.fixture
def browser(mesh: Mesh) -> Iterator[BrowserContext]:
    with browser_context(mesh.state) as context:
        yield context


@pytest.fixture
def new_page(browser: BrowserContext) -> Callable[[], Page]:
    """A page of the test's browser whose script errors fail the test."""
    errors: list[str] = []

    def make() -> Page:
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    assert errors == [], "the page's scripts failed"
