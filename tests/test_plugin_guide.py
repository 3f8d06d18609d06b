"""The plugin guide's complete minimal plugin (doc/minimal_plugin/, included into
doc/plugin-guide.rst with ``literalinclude``) installs as a reader would install it, serves
from a real ``deepaas-like-run``, and answers what the guide shows.

It is installed with pip into a folder of its own (``--target``), never into the shared
environment, and found by the server through ``PYTHONPATH`` as any installed plugin is:
through its ``deepaas.v2.model`` entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, start_server

MINIMAL_PLUGIN = ROOT / "doc" / "minimal_plugin"
GUIDE = (ROOT / "doc" / "plugin-guide.rst").read_text(encoding="utf-8")
#: pip without the network, quiet about itself: the plugin's one requirement (marshmallow)
#: is the server's too, and setuptools comes from the environment (no build isolation).
PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}


def install(folder: Path, site: Path) -> None:
    """``pip install --no-deps --no-build-isolation --target site folder``, or fail with pip's output."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(site)]
    done = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, timeout=300, env={**os.environ, **PIP_ENV}
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of the guide's plugin, installed from a copy of doc/minimal_plugin/."""
    work = tmp_path_factory.mktemp("guide")
    copy = shutil.copytree(MINIMAL_PLUGIN, work / "minimal_plugin")
    install(copy, work / "site")
    entry_points = next((work / "site").glob("wordcount-*.dist-info")) / "entry_points.txt"
    assert entry_points.read_text().split() == ["[deepaas.v2.model]", "wordcount", "=", "wordcount.api"]
    path = os.pathsep.join([str(work / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # This environment's server, whether or not its bin/ folder is on PATH.
    program = Path(sys.executable).with_name("deepaas-like-run")
    url = start_server(["wordcount"], work, env={"PYTHONPATH": path}, program=str(program))
    yield url
    url.stop()
    assert list(url.upload_dir.iterdir()) == [], "uploads left behind"


def shown_in_guide(answer: object) -> None:
    """The answer, as the server writes JSON, is printed in the guide as it is."""
    text = json.dumps(answer)
    assert text in GUIDE, f"doc/plugin-guide.rst does not show this answer:\n{text}"


def test_the_guide_includes_the_tested_files():
    for path in ("minimal_plugin/pyproject.toml", "minimal_plugin/wordcount/api.py"):
        assert f".. literalinclude:: {path}" in GUIDE
        assert (ROOT / "doc" / path).is_file()


def test_metadata(server):
    metadata = requests.get(server + "/v2/models/wordcount/", timeout=60).json()
    assert metadata["id"] == "wordcount" and metadata["author"] == "Jane Doe"
    shown_in_guide(metadata)


def test_predict_a_string_and_a_file(server):
    url = server + "/v2/models/wordcount/predict/"
    from_text = requests.post(url, files={"text": (None, "the cat and the hat")}, timeout=60)
    assert from_text.status_code == 200, from_text.text
    assert from_text.json()["predictions"] == {"words": 5, "distinct": 4, "top": [["the", 2], ["and", 1], ["cat", 1]]}
    shown_in_guide(from_text.json())
    upload = {"document": ("quote.txt", b"to be or not to be\n"), "top": (None, "2")}
    from_file = requests.post(url, files=upload, timeout=60)
    assert from_file.status_code == 200, from_file.text
    assert from_file.json()["predictions"]["top"] == [["be", 2], ["to", 2]]
    shown_in_guide(from_file.json())


def test_bad_input_names_the_field(server):
    url = server + "/v2/models/wordcount/predict/"
    nothing = requests.post(url, files={"top": (None, "2")}, timeout=60)
    assert nothing.status_code == 422 and nothing.json() == {"text": ["give a text or a document"]}
    shown_in_guide(nothing.json())
    out_of_range = requests.post(url, files={"text": (None, "hello"), "top": (None, "0")}, timeout=60)
    assert out_of_range.status_code == 422 and list(out_of_range.json()) == ["top"]
    shown_in_guide(out_of_range.json())


def test_train_reports_progress_metrics_and_output(server):
    url = server + "/v2/models/wordcount/train/"
    started = requests.post(url, files={"epochs": (None, "3")}, timeout=60).json()
    assert started["status"] in ("queued", "running") and started["args"] == {"epochs": 3, "epoch_seconds": 0.0}
    assert json.dumps(started["args"]) in GUIDE
    deadline = time.monotonic() + 60  # a liveness bound: the training itself takes well under a second
    training = started
    while training["status"] not in ("done", "error") and time.monotonic() < deadline:
        time.sleep(0.1)
        training = requests.get(f"{url}{started['uuid']}", timeout=60).json()
    assert training["status"] == "done", training
    assert training["progress"] == 1.0
    messages = [event["message"] for event in training["events"]]
    plugin_messages = [message for message in messages if message.startswith("epoch ")]
    assert plugin_messages == ["epoch 1 of 3", "epoch 2 of 3", "epoch 3 of 3"], messages
    assert training["metrics"] == {"loss": 0.3333}
    assert training["result"]["output"] == {"epochs": 3, "loss": 0.3333}
    for shown in ('"metrics": {"loss": 0.3333}', '"output": {"epochs": 3, "loss": 0.3333}', '"progress": 1.0'):
        assert shown in GUIDE


def test_the_client_example_prints_what_the_guide_shows(server, tmp_path):
    """doc/samples/wordcount_client.py, pointed at this server, prints the lines the guide shows."""
    script = (ROOT / "doc" / "samples" / "wordcount_client.py").read_text(encoding="utf-8")
    assert "samples/wordcount_client.py" in GUIDE
    program = tmp_path / "wordcount_client.py"
    program.write_text(script.replace('"http://127.0.0.1:5000"', repr(str(server))))
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[-1] == "done {'loss': 0.3333} {'epochs': 3, 'loss': 0.3333}"
    for line in printed:
        assert f"    {line}\n" in GUIDE, f"doc/plugin-guide.rst does not show the line {line!r}"
    assert "epoch 3 of 3" in done.stderr, "the training's progress goes to stderr"
