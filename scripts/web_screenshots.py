"""Screenshots of the web page (``/web/``) at a desktop's and a phone's width, for doc/web.rst.

    python scripts/web_screenshots.py [--out doc/images/web]

Re-runnable: it starts its own server on 127.0.0.1 (a free port; its job database, model
store and uploads in a temporary folder) with the example plugins, their tiny models built
from configs (nothing downloaded), drives Debian's Chromium (/usr/bin/chromium) through
Playwright as a person would (fills the forms, uploads doc/samples/cat.png, starts a
training and promotes its version), and writes ``<page>-desktop.png`` (1280 px wide) and
``<page>-phone.png`` (390 px) into ``--out``. The server is stopped by its PID at the end.
Needs the test extra (Playwright) and the example plugins installed, as the tests do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "doc" / "samples" / "cat.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
KEY = "screenshot-key"
STEP_MS = 120_000


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_models(folder: Path) -> dict[str, str]:
    """Build the image generation and video captioning plugins' tiny models; their env."""
    from deepaas_like_image_generation import pipeline
    from deepaas_like_image_generation.testing import save_tiny_pipeline
    from deepaas_like_video_captioning import captioner
    from deepaas_like_video_captioning.testing import build_tiny_captioner

    return {
        pipeline.MODEL_DIR_ENV: str(save_tiny_pipeline(folder / "tiny-sd")),
        captioner.MODEL_DIR_ENV: str(build_tiny_captioner(folder / "tiny-captioner")),
    }


@contextmanager
def server(folder: Path, models: list[str], env: dict[str, str], args: list[str] = ()) -> Iterator[str]:
    """A server of ``models`` on a free port; its URL while the block runs."""
    port = free_port()
    (folder / "uploads").mkdir(exist_ok=True)
    command = [
        shutil.which("deepaas-like-run") or "deepaas-like-run",
        *("--listen-ip", "127.0.0.1", "--listen-port", str(port)),
        *("--database-url", f"sqlite:///{folder / 'jobs.sqlite'}", "--model-store", str(folder / "store")),
        *("--upload-dir", str(folder / "uploads")),
        *(f"--model-name={name}" for name in models),
        *args,
    ]
    log = folder / "server.log"
    environment = {**os.environ, "XDG_STATE_HOME": str(folder / "state"), **env}
    process = subprocess.Popen(command, env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready(url: str) -> bool:
    """Whether every model has a warmed worker (``/readyz`` answers 200)."""
    try:
        return requests.get(url + "/readyz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


# ------------------------------------------------------------------------------ the pages


def ai4os_demo_app(folder: Path) -> dict[str, str]:
    """The real ai4os-demo-app (tests/fixtures/packages), pip-installed into ``folder``."""
    source = shutil.copytree(ROOT / "tests" / "fixtures" / "packages" / "ai4os_demo_app", folder / "ai4os-source")
    site = folder / "ai4os-site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "--target", str(site), str(source)], check=True, timeout=300)
    return {"PYTHONPATH": str(site), "Ai4os_demo_app_AI4_METADATA_DIR": str(source)}


def predict(
    page: Any, url: str, model: str, files: dict[str, Path], media_type: str | None = None, **values: str
) -> None:
    """Open the model's predict view, choose ``files``, fill ``values``, ask for
    ``media_type``, predict."""
    page.goto(f"{url}/web/#/models/{model}/predict")
    page.get_by_role("button", name="Predict").wait_for()
    for name, path in files.items():
        page.locator(f"#predict-{name}").set_input_files(str(path))
    for name, value in values.items():
        page.locator(f"#predict-{name}").fill(value)
    if media_type:
        page.locator(f"input[name=predict-media-type][value='{media_type}']").check()
    page.get_by_role("button", name="Predict").click()
    page.locator(".predict-status").get_by_text("Answered in").or_(
        page.locator(".field-error:not(:empty)")
    ).first.wait_for()
    page.wait_for_timeout(300)  # media elements paint their first frame


def train_text_classifier(page: Any, url: str) -> str:
    """Start a text_classifier training from its form; its uuid once its chart has points."""
    page.goto(f"{url}/web/#/models/text_classifier/trainings")
    page.locator("#train-epochs").fill("40")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**/trainings/*")
    page.locator("figure.chart canvas").first.wait_for()
    page.wait_for_timeout(2500)  # a few epochs drawn
    return page.url.rsplit("/", 1)[1]


def shots(folder: Path) -> dict[str, Callable[[Any, str], None]]:
    """Page name -> what to do before its screenshot (the page, the server's URL)."""
    wav = folder / "beep.wav"
    _write_beep(wav)
    ai4os_files = {
        "demo_image": ROOT / "tests/fixtures/packages/ai4os_demo_app/data/sample-image.png",
        "demo_audio": wav,
        "demo_video": ROOT / "tests/fixtures/packages/ai4os_demo_app/data/sample-video.mp4",
    }
    state: dict[str, str] = {}

    def training(page: Any, url: str) -> None:
        if "uuid" not in state:
            state["uuid"] = train_text_classifier(page, url)
        else:
            page.goto(f"{url}/web/#/models/text_classifier/trainings/{state['uuid']}")
            page.locator("figure.chart canvas").first.wait_for()

    def versions(page: Any, url: str) -> None:
        page.goto(f"{url}/web/#/models/text_classifier/trainings/{state['uuid']}")
        page.get_by_text("done", exact=True).first.wait_for(timeout=STEP_MS * 3)
        page.goto(f"{url}/web/#/models/text_classifier/versions")
        promote = page.get_by_role("button", name="Promote")
        rollback = page.get_by_role("button", name="Roll back")  # shown once a version is promoted
        promote.or_(rollback).first.wait_for()
        if not rollback.count():
            page.once("dialog", lambda dialog: dialog.accept())
            promote.first.click()
            rollback.wait_for()

    def compare(page: Any, url: str) -> None:
        page.goto(f"{url}/web/#/models/demo/trainings")
        if "demo" not in state:
            for rate in ("0.1", "0.05"):
                page.locator("#train-epochs").fill("12")
                page.locator("#train-learning_rate").fill(rate)
                page.locator("#train-epoch_seconds").fill("0.1")
                page.get_by_role("button", name="Start training").click()
                page.wait_for_url("**/trainings/*")
                page.get_by_text("done", exact=True).first.wait_for(timeout=STEP_MS)
                page.goto(f"{url}/web/#/models/demo/trainings")
            state["demo"] = "done"
        boxes = page.locator("input[type=checkbox][id^=pick-]")
        boxes.nth(0).check()
        boxes.nth(1).check()
        page.get_by_role("button", name="Compare 2 selected").click()
        page.get_by_role("heading", name="Compared metrics").wait_for()
        page.locator("figure.chart canvas").first.wait_for()

    return {
        "key": lambda page, url: page.goto(f"{url}/web/"),
        "models": lambda page, url: (_use_key(page, url), page.locator("article.card").first.wait_for()),
        "model": lambda page, url: (
            page.goto(f"{url}/web/#/models/text_classifier"),
            page.locator("dl.metadata").wait_for(),
        ),
        "predict-demo-png": lambda page, url: predict(page, url, "demo", {"image": CAT}, "image/png"),
        "predict-demo-422": lambda page, url: predict(page, url, "demo", {"image": ROOT / "README.md"}),
        "predict-ai4os-json": lambda page, url: predict(page, url, "ai4os_demo_app", ai4os_files, "application/json"),
        "predict-image-generation": lambda page, url: predict(
            page,
            url,
            "image_generation",
            {},
            None,
            prompt="a red square",
            num_inference_steps="2",
            width="64",
            height="64",
        ),
        "predict-video-captioning": lambda page, url: predict(
            page, url, "video_captioning", {"video": folder / "clip.mp4"}, None, max_frames="4"
        ),
        "training-live": training,
        "versions": versions,
        "trainings-compare": compare,
    }


def _use_key(page: Any, url: str) -> None:
    page.goto(f"{url}/web/")
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("API key").press("Enter")


def _write_beep(path: Path) -> None:
    """A half-second 440 Hz tone as 16-bit mono WAV (the ai4os demo's audio argument)."""
    import math
    import struct
    import wave

    rate = 8000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(rate // 2))
        )


def take(url: str, folder: Path, out: Path, only: list[str]) -> list[Path]:
    """The pages of :func:`shots` (``only`` those, when given) at each width of
    :data:`WIDTHS`; the files written."""
    from playwright.sync_api import sync_playwright

    written = []
    wanted = set(only) | {"key", "models"} if only else None  # the key is entered on "models"
    pages = {name: action for name, action in shots(folder).items() if wanted is None or name in wanted}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width, viewport in WIDTHS.items():
            context = browser.new_context(viewport=viewport)
            page = context.new_page()
            page.set_default_timeout(STEP_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
            for name, action in pages.items():
                action(page, url)
                path = out / f"{name}-{width}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
                print(path, file=sys.stderr)
            if errors:
                raise RuntimeError(f"errors in the page at {width} width: {errors}")
            context.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "doc" / "images" / "web")
    parser.add_argument("--only", nargs="*", default=[], help="page names (default: every page)")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    from deepaas_like_text_classifier import classifier
    from deepaas_like_video_captioning.testing import write_clip

    with tempfile.TemporaryDirectory(prefix="web-screenshots-") as name:
        folder = Path(name)
        env = {**tiny_models(folder), **ai4os_demo_app(folder), classifier.DATA_DIR_ENV: str(folder / "text")}
        write_clip(folder / "clip.mp4")
        models = ["demo", "text_classifier", "image_generation", "video_captioning", "ai4os_demo_app"]
        # An admin key: it predicts and trains, and may promote versions too.
        with server(folder, models, env, ["--admin-token", KEY]) as url:
            written = take(url, folder, options.out, options.only)
    print(f"{len(written)} screenshots in {options.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
