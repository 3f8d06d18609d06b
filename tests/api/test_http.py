"""Every route of a real ``deepaas-like-run`` process on 127.0.0.1, serving the pip-installed
demo plugin (and test plugins installed through real entry points).
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import pytest
import requests
from PIL import Image

from tests.conftest import png_bytes

PREDICT = "/v2/models/demo/predict/"
TRAIN = "/v2/models/demo/train/"


@pytest.fixture(scope="module")
def demo(module_server):
    """One demo server for the tests that leave no state the others could see."""
    return module_server("demo")


def wait_for(url: str, status: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        training = requests.get(url, timeout=5).json()
        if training["status"] == status:
            return training
        assert training["status"] in ("pending", "running"), training
        time.sleep(0.1)
    raise AssertionError(f"{url} never reached {status!r}: {training}")


def test_versions_and_v2(demo):
    root = requests.get(demo + "/").json()
    assert root["versions"][0]["id"] == "v2" and root["versions"][0]["version"] == "stable"
    assert {link["rel"] for link in root["links"]} == {"help", "describedby", "alternate"}
    web = next(link for link in root["links"] if link["rel"] == "alternate")
    assert web["type"] == "text/html" and requests.get(demo + web["href"]).status_code == 200
    assert requests.get(demo + "/v2/").json()["id"] == "v2"


def test_models_and_metadata(demo):
    models = requests.get(demo + "/v2/models/").json()["models"]
    assert [m["id"] for m in models] == ["demo"]
    metadata = requests.get(demo + "/v2/models/demo/").json()
    assert metadata["name"] == "demo" and metadata["license"] == "Apache-2.0"
    assert metadata["warm"] is True, "warm() must run in the worker before it serves"
    assert metadata["links"][0]["href"].endswith("/v2/models/demo/")


def test_slashless_paths_redirect_permanently(demo):
    answer = requests.get(demo + "/v2/models", allow_redirects=False)
    assert answer.status_code == 308 and answer.headers["Location"] == "/v2/models/"
    followed = requests.post(demo + "/v2/models/demo/predict", files={"image": png_bytes()})
    assert followed.status_code == 200, "a 308 keeps the POST and its body"


def test_predict_json_validated_against_schema(demo):
    answer = requests.post(
        demo + PREDICT, files={"image": ("a.png", png_bytes((40, 30)), "image/png")}, data={"size": "20"}
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["width"] == 40 and body["height"] == 30 and body["thumbnail_size"] == [20, 15]
    assert body["mean"] == [10.0, 200.0, 30.0]


@pytest.mark.parametrize(
    ("how", "media_type"),
    [
        ({"headers": {"Accept": "image/png"}}, "image/png"),
        ({"data": {"accept": "image/png"}}, "image/png"),
        ({"headers": {"Accept": "application/zip;q=0.9, image/png;q=0.1"}}, "application/zip"),
        ({"headers": {"Accept": "image/*"}}, "image/png"),
        ({"headers": {"Accept": "*/*"}}, "application/json"),
        ({"headers": {"Accept": "application/json, */*;q=0.1"}}, "application/json"),
    ],
)
def test_content_negotiation(demo, how, media_type):
    answer = requests.post(demo + PREDICT, files={"image": png_bytes((64, 64))}, **how)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].split(";")[0] == media_type
    if media_type == "image/png":
        assert answer.headers["Content-Disposition"] == 'attachment; filename="prediction.png"'
        assert Image.open(io.BytesIO(answer.content)).size == (64, 64)
    if media_type == "application/zip":
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert sorted(archive.namelist()) == ["stats.json", "thumbnail.png"]
        assert json.loads(archive.read("stats.json"))["width"] == 64


def test_an_accept_header_matching_no_offer_gets_the_default_as_from_deepaas(demo):
    answer = requests.post(demo + PREDICT, files={"image": png_bytes()}, headers={"Accept": "text/csv"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json") and "width" in answer.json()
    assert answer.text.endswith("}\n"), "JSON answers end with a newline"


def test_invalid_arguments_name_the_field(demo):
    answer = requests.post(demo + PREDICT, data={"size": "3", "filter": "sepia"})
    assert answer.status_code == 422
    assert set(answer.json()) == {"image", "size", "filter"}
    not_a_file = requests.post(demo + PREDICT, data={"image": "just text"})
    assert not_a_file.status_code == 422 and "image" in not_a_file.json()
    not_an_image = requests.post(demo + PREDICT, files={"image": ("x.txt", b"hello", "text/plain")})
    assert not_an_image.status_code == 422 and "image" in not_an_image.json()


def test_unknown_model_and_training(demo):
    assert requests.get(demo + "/v2/models/nope/").status_code == 404
    answer = requests.post(demo + "/v2/models/nope/predict/")
    assert answer.status_code == 404 and "nope" in answer.json()["message"]
    assert requests.get(demo + TRAIN + "0" * 32).status_code == 404
    assert requests.delete(demo + TRAIN + "0" * 32).status_code == 404


def test_training_life(run_server):
    demo = run_server("demo")
    started = requests.post(demo + TRAIN, data={"epochs": "3"})
    assert started.status_code == 200
    training = started.json()
    assert re.fullmatch(r"[0-9a-f]{32}", training["uuid"])
    assert training["status"] == "running" and training["args"]["epochs"] == 3
    done = wait_for(demo + TRAIN + training["uuid"], "done")
    assert done["result"]["output"]["final_loss"] < done["result"]["output"]["epochs"][0]["loss"]
    assert done["result"]["duration_seconds"] > 0 and done["finish_date"] == done["result"]["finish_date"]
    listing = requests.get(demo + TRAIN).json()
    assert isinstance(listing, list) and [t["uuid"] for t in listing] == [training["uuid"]]


def test_cancel_running_training_and_worker_is_replaced(demo):
    slow = requests.post(demo + TRAIN, json={"epochs": 1000, "epoch_seconds": 0.05}).json()
    time.sleep(1.5)  # let it reach the worker
    cancelled = requests.delete(demo + TRAIN + slow["uuid"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert requests.get(demo + TRAIN + slow["uuid"]).json()["status"] == "cancelled"
    after = requests.post(demo + TRAIN, data={"epochs": "2"}).json()
    assert wait_for(demo + TRAIN + after["uuid"], "done")["result"]["output"]["epochs"][-1]["epoch"] == 2
    assert requests.post(demo + PREDICT, files={"image": png_bytes()}).status_code == 200


def test_trainings_survive_restart(run_server, tmp_path):
    first = run_server("demo")
    done = requests.post(first + TRAIN, data={"epochs": "1"}).json()
    wait_for(first + TRAIN + done["uuid"], "done")
    running = requests.post(first + TRAIN, json={"epochs": 1000, "epoch_seconds": 0.05}).json()
    time.sleep(1.0)
    assert first.stop() == 0
    second = run_server("demo", database_url=first.database_url)
    assert requests.get(second + TRAIN + done["uuid"]).json()["status"] == "done"
    interrupted = requests.get(second + TRAIN + running["uuid"]).json()
    assert interrupted["status"] == "error" and "interrupted" in interrupted["message"]


def test_openapi_and_swagger_ui(demo):
    document = requests.get(demo + "/swagger.json").json()
    assert document["openapi"].startswith("3.")
    assert requests.get(demo + "/openapi.json").json() == document
    arguments = document["components"]["schemas"]["DemoPredictArgs"]["properties"]
    assert arguments["image"] == {
        "type": "string",
        "format": "binary",
        "description": "An image file (PNG, JPEG, ...).",
    }
    assert arguments["size"]["default"] == 64 and arguments["size"]["minimum"] == 8
    assert arguments["filter"]["enum"] == ["none", "blur", "edges", "grayscale"]
    predict = document["paths"]["/v2/models/demo/predict/"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert set(predict["responses"]["200"]["content"]) == {"application/json", "image/png", "application/zip"}
    assert "DemoTrainArgs" in document["components"]["schemas"]
    ui = requests.get(demo + "/api")
    assert ui.status_code == 200 and "swagger" in ui.text.lower()
    assert requests.get(demo + "/ui").url.endswith("/api")


def test_uploads_are_deleted_after_each_call(demo):
    for accept in ("application/json", "image/png"):
        requests.post(demo + PREDICT, files={"image": png_bytes()}, data={"accept": accept})
    requests.post(demo + PREDICT, files={"image": ("x.txt", b"not an image")})
    assert list(demo.upload_dir.iterdir()) == []


def test_json_body_and_query_string_arguments(demo):
    answer = requests.post(demo + "/v2/models/demo/train/?epochs=2", json={"learning_rate": 0.5})
    assert answer.json()["args"]["epochs"] == 2 and answer.json()["args"]["learning_rate"] == 0.5
    bad = requests.post(demo + TRAIN, data="{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and "_body" in bad.json()


def test_demo_training_reports_progress(demo):
    training = requests.post(demo + TRAIN, data={"epochs": "4"}).json()
    done = wait_for(demo + TRAIN + training["uuid"], "done")
    assert done["progress"] == 1.0
    assert [event["message"].split(":")[0] for event in done["events"] if event.get("source") != "server"] == [
        "epoch 1",
        "epoch 2",
        "epoch 3",
        "epoch 4",
    ]
