"""The web page's predict view in Chromium, on real servers, as a person uses it: the demo's
form with an image upload answered as a JSON tree, a PNG shown inline, a ZIP listed; the
server's 422 messages beside their fields; a prediction run as a job with its progress;
the real public plugin ai4os-demo-app (vendored unchanged in tests/fixtures/packages) in
each of its media types; video_captioning and image_generation with tiny models. Every test
checks that the page logged no error and fetched nothing from anywhere but the server.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import request_host, screenshot_path
from tests.conftest import make_plugin_site

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "doc" / "samples" / "cat.png"
AI4OS_APP = REPO / "tests" / "fixtures" / "packages" / "ai4os_demo_app"
# A liveness bound for each step in the page (a busy machine is slow, a broken page never ends).
STEP_MS = 60_000
expect.set_options(timeout=STEP_MS)


def install_ai4os_demo_app(target: Path) -> dict[str, str]:
    """pip-install the vendored ai4os-demo-app into ``target`` (a copy is built: the build
    writes into its source folder); returns the env that serves it.
    """
    source = shutil.copytree(AI4OS_APP, target / "source")
    site = target / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "--target", str(site), str(source)], check=True, timeout=300)
    # The app reads its ai4-metadata.yml from this folder (its config.py), not from site-packages.
    return {"PYTHONPATH": str(site), "Ai4os_demo_app_AI4_METADATA_DIR": str(source)}


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory) -> str:
    """demo, slow (a predict that reports progress) and ai4os_demo_app on one server."""
    folder = tmp_path_factory.mktemp("plugins")
    app = install_ai4os_demo_app(folder)
    plugins = make_plugin_site(folder / "test-plugins", {"slow": "slow", "reporting": "reporting"})
    path = os.pathsep.join([app["PYTHONPATH"], plugins["PYTHONPATH"]])
    return module_server("demo", "slow", "reporting", "ai4os_demo_app", env={**app, "PYTHONPATH": path})


@pytest.fixture
def page(chromium) -> Iterator[Any]:
    """A fresh page; ``page.hosts`` lists where its requests went, ``page.errors`` its errors."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    page.hosts, page.errors = [], []
    page.on("request", lambda request: page.hosts.append(request_host(request.url)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def assert_clean(page: Any, answered_status: int | None = None) -> None:
    """No error logged (but Chromium's own line for each answer of ``answered_status``, the
    error answers a test asks for) and no request off the server.
    """
    expected = f"the server responded with a status of {answered_status}"
    assert [error for error in page.errors if answered_status is None or expected not in error] == []
    assert set(page.hosts) - {None} == {"127.0.0.1"}, page.hosts


def field(page: Any, name: str) -> Any:
    """The control of argument ``name`` (its id: predict-<name>)."""
    return page.locator(f"#predict-{name}")


def open_predict(page: Any, server: str, model: str) -> None:
    page.goto(f"{server}/web/#/models/{model}/predict")
    expect(page.get_by_role("button", name="Predict")).to_be_enabled()


def predict(page: Any, media_type: str | None = None) -> Any:
    """Choose the answer's media type (by its radio), press Predict; the request sent."""
    if media_type is not None:
        page.locator(f"input[name=predict-media-type][value='{media_type}']").check()
    with page.expect_request(lambda request: request.method == "POST" and "/predict/" in request.url) as sent:
        page.get_by_role("button", name="Predict").click()
    return sent.value


def answered(page: Any) -> None:
    expect(page.locator(".predict-status")).to_contain_text("Answered in")


def shoot(page: Any, name: str) -> None:
    path = screenshot_path(name)
    if path is not None:
        page.screenshot(path=str(path), full_page=True)


# --- the demo -----------------------------------------------------------------------------


def test_demo_answers_json_shown_as_a_tree(page, server):
    open_predict(page, server, "demo")
    image = field(page, "image")
    assert image.get_attribute("accept") == "image/*"
    image.set_input_files(str(CAT))
    expect(page.locator(".file-preview img")).to_have_js_property("naturalWidth", 320)
    assert field(page, "size").input_value() == "64"  # the default
    sent = predict(page, "application/json")
    assert sent.headers["accept"] == "application/json"
    answered(page)
    tree = page.locator(".json-tree")
    expect(tree).to_contain_text("width: 320")
    expect(tree).to_contain_text('mode: "RGB"')
    shoot(page, "web-predict-demo-json.png")
    assert_clean(page)


def test_demo_png_is_shown_inline_with_its_download(page, server):
    open_predict(page, server, "demo")
    field(page, "image").set_input_files(str(CAT))
    field(page, "filter").select_option("grayscale")
    sent = predict(page, "image/png")
    assert sent.headers["accept"] == "image/png"
    answered(page)
    shown = page.locator(".answer-output img.answer-image")
    expect(shown).to_have_js_property("naturalWidth", 64)  # the 320x200 cat's 64-pixel thumbnail
    download = page.locator(".answer-output a.download")
    assert download.get_attribute("download") == "prediction.png"
    with page.expect_download() as saved:
        download.click()
    assert Path(saved.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shoot(page, "web-predict-demo-png.png")
    assert_clean(page)


def test_demo_zip_is_listed(page, server):
    open_predict(page, server, "demo")
    field(page, "image").set_input_files(str(CAT))
    predict(page, "application/zip")
    answered(page)
    listing = page.locator(".answer-zip table")
    expect(listing).to_contain_text("thumbnail.png")
    expect(listing).to_contain_text("stats.json")
    expect(listing.locator("img.zip-thumbnail")).to_have_js_property("naturalWidth", 64)
    assert_clean(page)


def test_422_messages_are_shown_beside_their_fields(page, server, tmp_path):
    open_predict(page, server, "demo")
    predict(page)  # no image: the server says it is required
    image_error = page.locator("[data-field=image] .field-error")
    expect(image_error).to_contain_text("Missing data")
    expect(page.locator(".answer-output .notice-error")).to_contain_text("see the messages beside them")

    field(page, "image").set_input_files(str(CAT))
    field(page, "size").fill("2")
    predict(page)
    expect(page.locator("[data-field=size] .field-error")).to_contain_text("greater than or equal to 8")
    expect(image_error).to_be_empty()
    expect(field(page, "size")).to_be_focused()

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    field(page, "size").fill("64")
    field(page, "image").set_input_files(str(text))
    predict(page)
    expect(image_error).to_contain_text("not an image")
    expect(page.locator("[data-field=size] .field-error")).to_be_empty()
    shoot(page, "web-predict-422.png")
    assert_clean(page, answered_status=422)


# --- as a job -----------------------------------------------------------------------------


def test_a_prediction_runs_as_a_job_with_its_progress(page, server):
    open_predict(page, server, "slow")
    field(page, "seconds").fill("4")
    page.get_by_label("Run as a job").check()
    sent = predict(page, "image/png")
    assert sent.headers["prefer"] == "respond-async"
    progress = page.locator("progress.job-progress")
    expect(progress).to_be_visible()
    expect(page.locator(".predict-status")).to_contain_text("running")
    expect(page.locator(".predict-status")).to_contain_text("step")
    assert 0 < progress.evaluate("element => element.value") <= 1
    # Done: the stored PNG fetched from the job and shown.
    expect(page.locator(".predict-status")).to_contain_text("Job done")
    expect(page.locator(".answer-output img.answer-image")).to_have_js_property("naturalWidth", 1)
    expect(progress).to_be_hidden()
    assert_clean(page)


def test_a_job_can_be_cancelled(page, server):
    open_predict(page, server, "slow")
    field(page, "seconds").fill("60")
    page.get_by_label("Run as a job").check()
    predict(page)
    expect(page.locator(".predict-status")).to_contain_text("running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".answer-output")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Predict")).to_be_enabled()
    assert_clean(page)


# --- versions -----------------------------------------------------------------------------


def test_a_version_is_chosen_and_predicts(page, server, tmp_path):
    started = requests.post(server + "/v2/models/reporting/train/", data={"value": "5"}, timeout=60).json()
    events = requests.get(f"{server}/v2/models/reporting/train/{started['uuid']}/events", timeout=120)
    assert '"status": "done"' in events.text
    versions = requests.get(server + "/v2/models/reporting/versions/", timeout=60).json()["versions"]
    assert [version["id"] for version in versions] == ["reporting@1"]
    data = tmp_path / "data.bin"
    data.write_bytes(b"12345678")

    open_predict(page, server, "reporting@1")
    version = page.get_by_label("Version")
    expect(version).to_have_value("reporting@1")
    field(page, "data").set_input_files(str(data))
    sent = predict(page)
    assert urlsplit(sent.url).path == "/v2/models/reporting@1/predict/"
    answered(page)
    expect(page.locator(".json-tree")).to_contain_text("value: 5")  # what version 1 learnt

    version.select_option("reporting")  # the served version again
    assert page.url.endswith("#/models/reporting/predict")
    sent = predict(page)
    assert urlsplit(sent.url).path == "/v2/models/reporting/predict/"
    answered(page)
    assert_clean(page)


# --- ai4os-demo-app, the real public plugin -----------------------------------------------


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    """A 0.5 s 440 Hz WAV (the app's own sample is 1 MB)."""
    path = tmp_path_factory.mktemp("sound") / "beep.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(
            b"".join(struct.pack("<h", int(9000 * math.sin(i * 2 * math.pi * 440 / 8000))) for i in range(4000))
        )
    return path


def fill_ai4os_files(page: Any, sound: Path) -> None:
    field(page, "demo_image").set_input_files(str(AI4OS_APP / "data" / "sample-image.png"))
    field(page, "demo_audio").set_input_files(str(sound))
    field(page, "demo_video").set_input_files(str(AI4OS_APP / "data" / "sample-video.mp4"))


def test_ai4os_demo_app_form_has_a_widget_per_argument(page, server, sound):
    open_predict(page, server, "ai4os_demo_app")
    # Files by the description convention ("image", "audio", "video" in it), as deepaas_ui.
    for name, kind in [("demo_image", "image"), ("demo_audio", "audio"), ("demo_video", "video")]:
        assert field(page, name).get_attribute("accept") == f"{kind}/*"
    assert field(page, "demo_password").get_attribute("type") == "password"
    assert field(page, "demo_str_choice").input_value() == "choice2"
    assert field(page, "demo_int_range").get_attribute("max") == "100"
    expect(field(page, "demo_bool")).to_be_checked()
    assert field(page, "demo_list_of_floats").input_value() == "0.1, 0.2, 0.3"
    names = page.locator("input[name=predict-media-type]").evaluate_all("radios => radios.map(r => r.value)")
    assert names == ["application/json", "application/zip", "image/*"]
    fill_ai4os_files(page, sound)
    expect(page.locator(".file-preview audio")).to_have_count(1)
    expect(page.locator(".file-preview video")).to_have_count(1)
    assert_clean(page)


def test_ai4os_demo_app_json_shows_its_media_and_classification(page, server, sound):
    open_predict(page, server, "ai4os_demo_app")
    fill_ai4os_files(page, sound)
    field(page, "demo_int_range").fill("7")
    predict(page, "application/json")
    answered(page)
    chart = page.locator("table.classification")
    expect(chart.locator("tr")).to_have_count(5)
    values = chart.locator(".bar-value").all_inner_texts()
    assert len(values) == 5 and all(value.endswith("%") for value in values)
    assert [float(value.rstrip(" %")) for value in values] == sorted(
        (float(v.rstrip(" %")) for v in values), reverse=True
    )
    output = page.locator(".answer-output")
    expect(output.locator("img.answer-image")).to_have_js_property("naturalWidth", 640)
    expect(output.locator("audio")).to_have_count(1)
    expect(output.locator("video")).to_have_count(1)
    expect(page.locator(".json-tree")).to_contain_text("demo_int_range: 7")
    expect(page.locator(".json-tree")).to_contain_text("in base64 (shown above)")
    shoot(page, "web-predict-ai4os-json.png")
    # At a phone's width the page does not scroll sideways (wide parts scroll in their box).
    page.set_viewport_size({"width": 390, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shoot(page, "web-predict-ai4os-json-phone.png")
    assert_clean(page)


def test_ai4os_demo_app_zip_and_image_answers(page, server, sound):
    open_predict(page, server, "ai4os_demo_app")
    fill_ai4os_files(page, sound)
    predict(page, "application/zip")
    answered(page)
    listing = page.locator(".answer-zip table")
    for name in ["args.json", "demo_image.png", "demo_audio.wav", "demo_video.mp4"]:
        expect(listing).to_contain_text(name)
    expect(listing.locator("img.zip-thumbnail")).to_have_js_property("naturalWidth", 640)

    sent = predict(page, "image/*")
    # The app reads only its accept argument (not the header): the image proves it was sent.
    assert sent.headers["accept"] == "image/*"
    answered(page)
    expect(page.locator(".answer-output img.answer-image")).to_have_js_property("naturalWidth", 640)
    assert_clean(page)


# --- video_captioning and image_generation with tiny models --------------------------------


@pytest.fixture(scope="module")
def media_server(module_server, tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    from deepaas_like_image_generation import pipeline as sd
    from deepaas_like_image_generation.testing import save_tiny_pipeline
    from deepaas_like_video_captioning import captioner as cap
    from deepaas_like_video_captioning.testing import build_tiny_captioner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: the tiny models gain nothing from more
    try:
        captioner = build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))
        pipeline = save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
    finally:
        torch.set_num_threads(threads)
    env = {cap.MODEL_DIR_ENV: str(captioner), sd.MODEL_DIR_ENV: str(pipeline)}
    return module_server("video_captioning", "image_generation", env=env)


def test_video_captioning_answers_with_its_captions(page, media_server, tmp_path):
    from deepaas_like_video_captioning.testing import write_clip

    clip = write_clip(tmp_path / "clip.mp4")
    open_predict(page, media_server, "video_captioning")
    assert field(page, "video").get_attribute("accept") == "video/*"
    field(page, "video").set_input_files(str(clip))
    field(page, "max_frames").fill("2")
    predict(page, "application/json")
    answered(page)
    expect(page.locator(".json-tree")).to_contain_text('caption: "a red square"')
    expect(page.locator(".json-tree")).to_contain_text('caption: "a green square"')
    assert_clean(page)


def test_image_generation_shows_the_generated_png(page, media_server):
    open_predict(page, media_server, "image_generation")
    field(page, "prompt").fill("a red square")
    for name, value in [("width", "64"), ("height", "64"), ("num_inference_steps", "2"), ("seed", "3")]:
        field(page, name).fill(value)
    predict(page, "image/png")
    answered(page)
    expect(page.locator(".answer-output img.answer-image")).to_have_js_property("naturalWidth", 64)
    shoot(page, "web-predict-image-generation.png")
    assert_clean(page)
