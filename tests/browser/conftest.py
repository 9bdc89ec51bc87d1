"""Fixtures of the browser tests: Debian's Chromium (provisioned by `mesh install`) driven by
Playwright against the real native mesh (tests/conftest.py starts it), a fresh profile each."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Page

from mesh.runtime.browser import chromium
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology


@pytest.fixture(scope="session")
def edge_url(topology: Topology) -> str:
    """The page's address: the edge's TLS listener (HTTP/1.1 and HTTP/2)."""
    return f"https://{topology.bind_host}:{topology.edge.https_port}"


@pytest.fixture
def launch_browser(mesh: Mesh) -> Iterator[Callable[[], BrowserContext]]:
    """launch_browser(): one more browser of the test (a profile of its own: another person)."""
    with chromium(mesh.state) as launch:
        yield launch


@pytest.fixture
def browser(launch_browser: Callable[[], BrowserContext]) -> BrowserContext:
    return launch_browser()


@pytest.fixture
def new_page(browser: BrowserContext) -> Iterator[Callable[..., Page]]:
    """new_page(context=the test's browser): a page whose script errors fail the test."""
    errors: list[str] = []

    def make(context: BrowserContext = browser) -> Page:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    assert errors == [], "the page's scripts failed"
