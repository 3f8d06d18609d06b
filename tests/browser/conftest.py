"""Chromium for browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright from PyPI
(its own browser downloads are never used). Without Chromium the tests skip, unless
``$DEEPAAS_LIKE_REQUIRE_CHROMIUM`` is set (CI sets it; ``.ci/run`` installs Chromium): then
they fail. Screenshots go to ``$DEEPAAS_LIKE_SCREENSHOTS`` when it names a folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_CHROMIUM_ENV = "DEEPAAS_LIKE_REQUIRE_CHROMIUM"
SCREENSHOTS_ENV = "DEEPAAS_LIKE_SCREENSHOTS"
# Headless, and nothing of its own on the network (no field trials, updates or sync): the
# only requests are the page's.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` (sync API) on Debian's Chromium, one per test module."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get(REQUIRE_CHROMIUM_ENV):
            pytest.fail(f"{message}; {REQUIRE_CHROMIUM_ENV} is set")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot_path(name: str) -> Path | None:
    """Where to save the screenshot ``name`` (a file name): in ``$DEEPAAS_LIKE_SCREENSHOTS``,
    created if missing; None when it is unset.
    """
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / name


def request_host(url: str) -> str | None:
    """The host a page's request went to; None for data: and blob: URLs (never on the
    network). Tests assert that every other request went to 127.0.0.1, the server."""
    if url.startswith(("data:", "blob:")):
        return None
    return urlsplit(url).hostname
