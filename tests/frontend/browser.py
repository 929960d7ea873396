"""Headless Chromium (Debian's, driven by Playwright; no browser download) and a live console to point it at.

``browser``: a fixture returning ``new_page()``; every page of a failing test is saved as a screenshot in
``test-artifacts/``. ``live_console``: ``tests.live_console.run_console`` as a fixture. Inside
Playwright's sync API no ORM call works (it runs an event loop in the test's thread): set the database
up before, read it through the pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests import factories
from tests.live_console import run_console

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]  # fmt: skip


@pytest.fixture
def browser(request: Any) -> Iterator[Callable[[], Page]]:
    """``new_page()`` opens a page in a fresh context (its own cookies); failures screenshot every page.
    Chromium starts at the first ``new_page()``: from then on the test's thread cannot use the ORM."""
    pages: list[Page] = []
    with contextlib.ExitStack() as stack:
        chromium: list[Browser] = []

        def new_page() -> Page:
            if not chromium:
                playwright = stack.enter_context(sync_playwright())
                chromium.append(playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS))
            page = chromium[0].new_context(viewport={"width": 1280, "height": 900}).new_page()
            pages.append(page)
            return page

        yield new_page
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for index, page in enumerate(pages):
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{index}.png"), full_page=True)
        for opened in chromium:
            opened.close()


def log_in(page: Page, base: str, username: str, next_path: str = "/") -> None:
    page.goto(f"{base}/login/?next={quote(next_path)}")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


@pytest.fixture
def live_console(transactional_db: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """The console as ``make serve-ws`` runs it (daphne), on the test database and Redis; ``base`` is its URL."""
    with run_console(tmp_path) as console:
        yield console
