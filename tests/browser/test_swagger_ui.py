"""Swagger UI in Chromium, as a person uses it, on a real server with ``--auth-token``:
Try-it-out on the demo's predict answers 401 until a key is entered under Authorize, then
200; an image answer is shown inline; the key stays across a reload (persistAuthorization);
and the page fetches nothing from anywhere but the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import request_host, screenshot_path

KEY = "swagger-s3cret"
PREDICT = "/v2/models/demo/predict/"
# A liveness bound for each step in the page (a busy machine is slow, a broken page never ends).
STEP_MS = 60_000
expect.set_options(timeout=STEP_MS)


@pytest.fixture(scope="module")
def keyed_demo(module_server) -> str:
    """A server of the demo plugin that requires the API key :data:`KEY`."""
    return module_server("demo", args=["--auth-token", KEY])


@pytest.fixture
def page(chromium, keyed_demo) -> Iterator[Any]:
    """A fresh browser context's page; ``page.hosts`` lists the host of every request it made."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    page.hosts = []
    page.on("request", lambda request: page.hosts.append(request_host(request.url)))
    yield page
    context.close()


def _open_predict(page: Any, server: str, image: Path) -> Any:
    """Open Swagger UI, expand the demo's predict operation, Try it out, choose ``image``."""
    page.goto(server + "/api")
    operation = page.locator(".opblock-post", has_text=PREDICT).first
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("input[type=file]").set_input_files(str(image))
    return operation


def _execute(page: Any, operation: Any) -> Any:
    """Click Execute; the request Swagger UI sent (its response received and shown)."""
    with page.expect_response(lambda response: response.url.endswith(PREDICT)) as answer:
        operation.locator("button.execute").click()
    return answer.value.request


def _shown_status(operation: Any) -> Any:
    return operation.locator(".live-responses-table tr.response td.response-col_status")


def _authorize(page: Any, key: str, screenshot: Path | None = None) -> None:
    """Click Authorize, enter ``key`` as the bearer key, authorize, close the dialog."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    bearer = dialog.locator(".auth-container").filter(has=page.locator("h4 code", has_text="bearer"))
    bearer.locator("input").fill(key)
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    bearer.locator("button.authorize").click()
    expect(bearer.locator("h6")).to_have_text("Authorized")
    dialog.locator("button.btn-done").first.click()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 160x100 PNG of colour gradients (its thumbnail is seen in the screenshot)."""
    ramp = Image.linear_gradient("L").resize((160, 100))
    path = tmp_path / "photo.png"
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("L", ramp.size, 160))).save(
        path
    )
    return path


def test_authorize_with_the_key_makes_try_it_out_predict(page, keyed_demo, image):
    operation = _open_predict(page, keyed_demo, image)
    refused = _execute(page, operation)
    assert "authorization" not in refused.headers and "x-api-key" not in refused.headers
    expect(_shown_status(operation)).to_have_text("401")

    _authorize(page, KEY, screenshot_path("swagger-authorize.png"))
    sent = _execute(page, operation)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    expect(_shown_status(operation)).to_have_text("200")
    body = operation.locator(".live-responses-table tr.response td.response-col_description").first
    expect(body).to_contain_text('"width": 160')  # the demo's statistics of the image sent

    assert set(page.hosts) - {None} == {"127.0.0.1"}, page.hosts


def test_an_image_answer_is_shown_inline(page, keyed_demo, image):
    operation = _open_predict(page, keyed_demo, image)
    _authorize(page, KEY)
    operation.locator("tr[data-property-name=accept] select").select_option("image/png")
    _execute(page, operation)
    expect(_shown_status(operation)).to_have_text("200")
    shown = operation.locator(".live-responses-table tr.response td.response-col_description img")
    expect(shown).to_have_count(1)
    # Decoded by the browser: the demo's 64-pixel thumbnail of the 160x100 image.
    expect(shown).to_have_js_property("naturalWidth", 64)
    path = screenshot_path("swagger-image.png")
    if path is not None:
        operation.locator(".live-responses-table").screenshot(path=str(path))
    assert set(page.hosts) - {None} == {"127.0.0.1"}, page.hosts


def test_the_key_stays_across_a_reload(page, keyed_demo, image):
    page.goto(keyed_demo + "/api")
    _authorize(page, KEY)
    page.reload()
    expect(page.locator(".auth-wrapper button.authorize")).to_have_class(re.compile(r"\blocked\b"))
    operation = _open_predict(page, keyed_demo, image)
    assert _execute(page, operation).headers["authorization"] == f"Bearer {KEY}"
    expect(_shown_status(operation)).to_have_text("200")
