"""Real-world DEEPaaS plugin patterns, served by a real server as DEEPaaS serves them: code
written the way the ai4os module template writes it (ai4os-hub/ai4os-yolov8-torch,
ai4os-hub/phyto-plankton-classification), without the ``deepaas`` package installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import TEST_PLUGINS, make_plugin_site, png_bytes

STYLE = "/v2/models/ai4os_style/"


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory):
    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)
    return module_server("ai4os_style", "raw_png", "failing", env=env)


def wait_for(url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(url, timeout=5).json()
        if job["status"] not in ("pending", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"{url} still running: {job}")


def test_the_upload_passes_the_plugins_isinstance_check_against_deepaas(server):
    answer = requests.post(server + STYLE + "predict/", files={"input": ("cat.png", png_bytes())})
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"]
    assert prediction["filename"] == "cat.png" and prediction["size"] == len(png_bytes())
    # ``from deepaas.model.v2.wrapper import UploadedFile`` at module level loaded, and is ours
    assert prediction["upload_class"] == "deepaas_like.model.files.UploadedFile"


def test_a_required_accept_located_in_the_headers_comes_from_the_accept_header(server):
    no_header = requests.post(server + STYLE + "predict/", files={"input": png_bytes()}, headers={"Accept": "*/*"})
    assert no_header.status_code == 200 and no_header.json()["predictions"]["accept"] == "application/json"
    document = requests.get(server + "/swagger.json").json()
    arguments = document["components"]["schemas"]["Ai4osStylePredictArgs"]
    assert "accept" not in arguments.get("required", []), "the server supplies accept: not required of clients"


def test_the_plugin_can_return_the_uploaded_file_itself(server):
    image = png_bytes((33, 21))
    for accept in ("image/png", "image/*", "image/png, application/json;q=0.5"):
        answer = requests.post(
            server + STYLE + "predict/", files={"input": ("in.png", image)}, headers={"Accept": accept}
        )
        assert answer.status_code == 200, (accept, answer.text)
        assert answer.content == image
        assert answer.headers["Content-Type"] == "image/png", "a concrete type, sniffed from the bytes"


def test_an_accept_header_matching_no_choice_gets_the_default(server):
    answer = requests.post(server + STYLE + "predict/", files={"input": png_bytes()}, headers={"Accept": "text/html"})
    assert answer.status_code == 200 and answer.json()["predictions"]["accept"] == "application/json"


def test_a_png_without_accept_has_one_media_type_sync_and_as_a_job(server):
    for as_file in ("false", "true"):  # bytes, and DEEPaaS's ReturnedFile
        sync = requests.post(server + "/v2/models/raw_png/predict/", data={"as_file": as_file})
        assert sync.status_code == 200 and sync.headers["Content-Type"] == "image/png"
        queued = requests.post(
            server + "/v2/models/raw_png/predict/", data={"as_file": as_file}, headers={"Prefer": "respond-async"}
        )
        assert queued.status_code == 202
        job = wait_for(urljoin(server, queued.headers["Location"]))
        assert job["status"] == "done" and job["result"]["media_type"] == "image/png"
        stored = requests.get(urljoin(server, queued.headers["Location"]), headers={"Accept": "image/png"})
        assert stored.headers["Content-Type"] == "image/png" and stored.content == sync.content


def test_the_uploaded_file_returned_from_a_job_is_kept(server):
    queued = requests.post(
        server + STYLE + "predict/",
        files={"input": ("in.png", png_bytes())},
        data={"accept": "image/*"},
        headers={"Prefer": "respond-async"},
    )
    job = wait_for(urljoin(server, queued.headers["Location"]))
    assert job["status"] == "done" and job["result"]["media_type"] == "image/png"


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_a_training_that_starts_processes_and_a_dataloader(server, tmp_path, start_method):
    form = {"logdir": str(tmp_path), "num_workers": "2", "monitor_seconds": "30"}
    if start_method:
        form["start_method"] = start_method  # the child imports the plugin, which imports deepaas
    started = requests.post(server + STYLE + "train/", data=form)
    assert started.status_code == 200, started.text
    training = wait_for(server + STYLE + "train/" + started.json()["uuid"], timeout=120)
    assert training["status"] == "done", training
    assert training["result"]["output"] == {"total": 120.0, "monitor_alive": True}
    deadline = time.monotonic() + 30  # a spawned monitor imports the plugin first
    pid_file = tmp_path / "tensorboard.pid"
    while not (pid_file.exists() and pid_file.read_text().isdigit()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.read_text().isdigit(), "the monitor process ran"
    assert json.loads((tmp_path / "result.json").read_text()) == {"total": 120.0}


def test_plugin_failures_and_every_request_are_in_the_server_log(server):
    failed = requests.post(server + "/v2/models/failing/predict/", data={"how": "raise"})
    assert failed.status_code == 500
    training = requests.post(server + "/v2/models/failing/train/", data={"fail": "true"}).json()
    assert wait_for(server + f"/v2/models/failing/train/{training['uuid']}")["status"] == "error"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "training diverged" not in Path(server.log).read_text():
        time.sleep(0.1)
    log = Path(server.log).read_text()
    assert "predict() of model 'failing' failed: RuntimeError: the model broke" in log
    assert 'raise RuntimeError("the model broke")' in log, "with the traceback"
    assert "train() of model 'failing' failed: ValueError: training diverged" in log
    assert '"POST /v2/models/failing/predict/ HTTP/1.1" 500' in log, "an access log line per request"


def test_trainings_survive_a_cancel_during_start_and_a_start_that_fails(run_server, tmp_path):
    flag = tmp_path / "fail-warm"
    env = {
        **make_plugin_site(tmp_path / "site", TEST_PLUGINS),
        "AI4OS_STYLE_WARM_SECONDS": "2",
        "AI4OS_STYLE_FAIL_WARM": str(flag),
    }
    server = run_server("ai4os_style", env=env)
    trainings = server + STYLE + "train/"
    form = {"logdir": str(tmp_path), "num_workers": "0", "monitor_seconds": "0"}
    # Cancelled while its workers start (2 s of warm()): the start goes on for the next one.
    first = requests.post(trainings, data=form).json()
    cancelled = requests.delete(trainings + first["uuid"]).json()
    assert cancelled["status"] == "cancelled"
    second = requests.post(trainings, data=form).json()
    assert wait_for(trainings + second["uuid"])["status"] == "done"

    # A training pool that fails to start fails its training with the reason; the next
    # training starts the pool again.
    server2 = run_server("ai4os_style", env=env)
    trainings = server2 + STYLE + "train/"
    flag.write_text("")  # the predict workers are warm; the training workers will fail
    failed = wait_for(trainings + requests.post(trainings, data=form).json()["uuid"])
    assert failed["status"] == "error" and "weights not found" in failed["message"]
    flag.unlink()
    assert wait_for(trainings + requests.post(trainings, data=form).json()["uuid"])["status"] == "done"


CATCH_ERROR = "/v2/models/catch_error/"


@pytest.fixture(scope="module")
def catch_error(module_server, tmp_path_factory):
    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)
    return module_server("catch_error", "predict_only", env=env)


def test_a_get_metadata_raising_through_catch_error_is_served_and_answers_the_real_error(catch_error):
    # deephdc/demo_app beside an editable install: get_metadata raises "No package found."
    # through HTTPBadRequest(reason=<the exception>), which newer aiohttp refuses to build.
    for _ in range(2):
        metadata = requests.get(catch_error + CATCH_ERROR)
        assert metadata.status_code == 400, metadata.text
        assert metadata.json() == {"message": "Exception: No package found."}
    answer = requests.post(catch_error + CATCH_ERROR + "predict/", data={"fail": "none"})
    assert answer.status_code == 200 and answer.json() == {"status": "OK", "predictions": {"fail": "none"}}
    # The listing shows the other models, and this one with its error (DEEPaaS: 500 for all).
    listing = requests.get(catch_error + "/v2/models/")
    assert listing.status_code == 200, listing.text
    models = {model["id"]: model for model in listing.json()["models"]}
    assert models["catch_error"]["error"] == {"status": 400, "message": "Exception: No package found."}
    assert len(models) >= 2 and all("error" not in m for name, m in models.items() if name != "catch_error")
    log = Path(catch_error.log).read_text()
    # The plugin's own traceback, once: at start-up, not per request.
    assert log.count('raise Exception("No package found.")') == 1, log
    assert log.count("get_metadata() of model 'catch_error' failed") == 1, log
    assert "not iterable" not in log


@pytest.mark.parametrize(
    ("fail", "status", "message"),
    [
        # _catch_error: building HTTPBadRequest(reason=e) raises TypeError inside the plugin.
        ("catch_error", 400, "ValueError: the input image is empty"),
        # The same exception as aiohttp before 3.10.6 built it.
        ("built", 400, "ValueError: the input image is empty"),
        # ai4os-yolov8-torch: the base HTTPException has no status of its own.
        ("yolov8", 500, "ValueError: the input image is empty"),
        ("str_reason", 404, "HTTPNotFound: no such image: the input image is empty"),
    ],
)
def test_a_hook_error_wrapped_in_an_aiohttp_exception_reaches_the_client_unwrapped(catch_error, fail, status, message):
    answer = requests.post(catch_error + CATCH_ERROR + "predict/", data={"fail": fail})
    assert (answer.status_code, answer.json()) == (status, {"message": message})


def test_the_cli_answers_the_metadata_error_and_predicts(tmp_path):
    env = {**os.environ, **make_plugin_site(tmp_path / "site", TEST_PLUGINS)}
    metadata = subprocess.run(
        ["deepaas-like-cli", "--model-name", "catch_error", "metadata"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert metadata.returncode == 1 and "Exception: No package found." in metadata.stderr, metadata.stderr
    predicted = subprocess.run(
        ["deepaas-like-cli", "--model-name", "catch_error", "predict", "--fail", "none"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert predicted.returncode == 0 and json.loads(predicted.stdout)["predictions"] == {"fail": "none"}
