"""The web page (``/web/``) in Chromium, as a person uses it: with ``--auth-token`` it loads
without a key but shows nothing of the models until the key is entered (a wrong one is
refused, the right one kept across a reload, forgotten on request), with ``--auth-docs``
too; the models' overview; the keyboard alone reaches every control; at a phone's width
nothing scrolls sideways; no console errors and nothing fetched from anywhere but the
server. The predict view: test_web_predict.py; trainings and versions: test_web_trainings.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import request_host

KEY = "web-s3cret"
STEP_MS = 60_000  # a liveness bound per step (a busy machine is slow, a broken page never ends)
expect.set_options(timeout=STEP_MS)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def keyed(module_server) -> str:
    """The demo, whose predict and train need the key :data:`KEY`."""
    return module_server("demo", args=["--auth-token", KEY])


@pytest.fixture(scope="module")
def keyed_docs(module_server) -> str:
    """The demo, whose documents need the key too (--auth-docs)."""
    return module_server("demo", args=["--auth-token", KEY, "--auth-docs"])


class Watched:
    """A page and what it did: console errors, uncaught exceptions, hosts it asked."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.hosts: set[str | None] = set()
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.hosts.add(request_host(request.url)))

    def assert_clean(self) -> None:
        assert not self.errors, self.errors
        assert self.hosts - {None} == {"127.0.0.1"}, self.hosts


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def watched(request, chromium) -> Iterator[Watched]:
    context = chromium.new_context(viewport=request.param)
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    yield Watched(page)
    context.close()


def _no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


def _use_key(page: Any, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")


@pytest.mark.parametrize("server", ["keyed", "keyed_docs"])
def test_the_page_shows_no_model_until_the_key_is_given(watched, server, request):
    url = request.getfixturevalue(server)
    page = watched.page
    page.goto(url + "/web/")
    main = page.locator("main")
    expect(main.get_by_role("heading", name="API key needed")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Image statistics")  # the demo's description
    expect(page.locator("#models-nav a")).to_have_count(0)

    _use_key(page, "not-the-key")
    expect(main.get_by_role("alert")).to_contain_text("refused")
    expect(page.locator("#models-nav a")).to_have_count(0)

    _use_key(page, KEY)
    expect(main.get_by_role("heading", name="Models")).to_be_visible()
    expect(main).to_contain_text("Image statistics")
    page.reload()
    expect(main).to_contain_text("Image statistics")  # the key is kept for this server
    _no_sideways_scroll(page)

    page.get_by_role("button", name="Forget key").click()
    expect(main.get_by_role("heading", name="API key needed")).to_be_visible()
    expect(main).not_to_contain_text("Image statistics")
    watched.errors = [e for e in watched.errors if "401" not in e]  # the refused key's answers
    watched.assert_clean()


def test_the_overview_shows_each_model_its_state_and_its_pages(watched, keyed):
    page = watched.page
    page.goto(keyed + "/web/")
    _use_key(page, KEY)
    card = page.locator("article.card", has=page.get_by_role("heading", name="demo"))
    expect(card).to_contain_text("ready")
    expect(card).to_contain_text("1 of 1 workers live")
    expect(card.get_by_role("link", name="Predict")).to_have_attribute("href", "#/models/demo/predict")
    expect(card.get_by_role("link", name="Train")).to_have_attribute("href", "#/models/demo/trainings")
    card.get_by_role("link", name="demo").click()
    expect(page).to_have_url(keyed + "/web/#/models/demo")
    expect(page.locator("main dl.metadata")).to_contain_text("deepaas_like developers")
    expect(page.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    _no_sideways_scroll(page)
    watched.assert_clean()


def _keyboard_page(chromium: Any, url: str, viewport: dict[str, int]) -> tuple[Any, Watched]:
    """A new context's page on ``url``/web/ with the key typed and Enter pressed, as a person
    without a mouse gives it; the overview shown."""
    context = chromium.new_context(viewport=viewport)
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(url + "/web/")
    expect(page.get_by_label("API key")).to_be_focused()  # the gate puts the cursor there
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text("Image statistics")
    return context, watched


def _tab_to(page: Any, expression: str, wanted: str, what: str, presses: int = 60) -> None:
    """Press Tab until the focused element's ``expression`` (JS) is ``wanted``."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate(expression) == wanted:
            return
    pytest.fail(f"Tab never reached {what}")


def test_the_keyboard_alone_gives_the_key_and_opens_a_model(chromium, keyed):
    context, watched = _keyboard_page(chromium, keyed, DESKTOP)
    try:
        page = watched.page
        _tab_to(page, "document.activeElement.getAttribute('href')", "#/models/demo", "the link to the demo's page")
        page.keyboard.press("Enter")
        expect(page.locator("main h1")).to_have_text("demo")
        watched.assert_clean()
    finally:
        context.close()


def test_the_keyboard_alone_fills_a_form_and_starts_a_training(chromium, keyed):
    context, watched = _keyboard_page(chromium, keyed, PHONE)
    try:
        page = watched.page
        page.goto(keyed + "/web/#/models/demo/trainings")
        expect(page.locator("#train-epochs")).to_be_visible()
        _tab_to(page, "document.activeElement.id", "train-epochs", "the epochs box")
        page.keyboard.press("Control+A")
        page.keyboard.type("3")
        _tab_to(page, "document.activeElement.textContent", "Start training", "Start training", presses=20)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"#/models/demo/trainings/[0-9a-f]{32}$"))
        expect(page.locator("main")).to_contain_text("done")
        _no_sideways_scroll(page)
        watched.assert_clean()
    finally:
        context.close()
