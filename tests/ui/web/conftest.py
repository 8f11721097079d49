"""A real browser for `aq web`'s tests: Debian's chromium driven by Playwright, one per test
module (starting it is the dear part), a fresh context and page per test. No browser is
downloaded: without /usr/bin/chromium, or when Playwright cannot start it, the tests that need
it are skipped and say why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium dials out at start, and a closed network
# refuses it; the rest keep it quiet and headless in a container.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
WAIT_MS = 20_000  # how long a page or an expect() waits: generous, as what holds returns at once


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed: ./test.sh installs it")
    sync_api.expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as playwright:
        try:
            started = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        except sync_api.Error as err:
            pytest.skip(f"Playwright cannot start {CHROMIUM}: {err.message.splitlines()[0]}")
        try:
            yield started
        finally:
            started.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of its own (cookies included) at a desktop size; it answers no dialog unless told."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
