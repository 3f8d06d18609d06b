"""Plugins of every shape, installed through real entry points, served by a real server:
a plugin written as the DEEPaaS documentation teaches, a class entry point, a plugin whose
code fails, one with predict only; several models per server; start-up errors.
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile

import pytest
import requests

from tests.conftest import start_server


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory):
    from tests.conftest import TEST_PLUGINS, make_plugin_site

    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)
    return module_server("deepaas_style", "class_style", "failing", "predict_only", env=env, args=["--workers", "2"])


def test_every_model_is_listed(server):
    names = [m["id"] for m in requests.get(server + "/v2/models/").json()["models"]]
    assert names == ["deepaas_style", "class_style", "failing", "predict_only"]


def test_deepaas_documented_plugin_serves_unchanged(server):
    url = server + "/v2/models/deepaas_style/predict/"
    answer = requests.post(url, files={"data": ("in.bin", b"abcd")}, data={"labels": ["x", "y"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "filename": "in.bin",
        "size": 4,
        "label": "x",
        "labels": ["x", "y"],
        "threshold": 0.5,
        "extra": None,
    }
    with_extra = requests.post(url, files={"data": b"ab", "extra": ("second.txt", b"2")})
    assert with_extra.json()["extra"] == "second.txt"
    metadata = requests.get(server + "/v2/models/deepaas_style/").json()
    assert metadata["author"] == "Jane Doe" and metadata["id"] == "deepaas_style"
    png = requests.post(url, files={"data": b"abc"}, headers={"Accept": "image/png"})
    assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    archive = requests.post(url, files={"data": b"abc"}, data={"accept": "application/zip"})
    assert zipfile.ZipFile(io.BytesIO(archive.content)).read("label.txt") == b"dog"
    bad = requests.post(url, files={"data": b"abc"}, data={"threshold": "2"})
    assert bad.status_code == 422 and list(bad.json()) == ["threshold"]


def test_deepaas_documented_plugin_openapi(server):
    document = requests.get(server + "/swagger.json").json()
    arguments = document["components"]["schemas"]["DeepaasStylePredictArgs"]["properties"]
    assert arguments["data"]["format"] == "binary"
    assert arguments["data"]["description"] == "Data file to perform inference on."
    assert arguments["threshold"]["default"] == 0.5
    assert arguments["labels"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": ["cat", "dog"],
        "description": "Label names.",
    }
    response = document["paths"]["/v2/models/deepaas_style/predict/"]["post"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/DeepaasStyleResponse"}


def test_the_document_says_what_validation_enforces(server):
    document = requests.get(server + "/openapi.json").json()
    arguments = document["components"]["schemas"]["ClassStylePredictArgs"]
    assert arguments["properties"]["scale"] == {
        "type": "number",
        "default": 1.0,
        "minimum": 0,
        "maximum": 1000,
        "exclusiveMinimum": True,
    }
    assert "additionalProperties" not in arguments, "undeclared arguments are accepted (and ignored)"
    url = server + "/v2/models/class_style/predict/"
    assert requests.post(url, data={"x": 2, "scale": 0}).status_code == 422, "the exclusive minimum is enforced"
    assert requests.post(url, data={"x": 2, "scale": 0.5, "unknown": 1}).json()["predictions"]["scaled"] == 1.0
    not_boolean = requests.post(url, params={"async": "null"}, data={"x": 2})
    assert not_boolean.status_code == 422 and "async" in not_boolean.json()


def test_deepaas_documented_plugin_trains(server):
    url = server + "/v2/models/deepaas_style/train/"
    training = requests.post(url, data={"sleep": "0"}).json()
    assert training["status"] == "running" and training["args"] == {"sleep": 0}
    assert requests.post(url, data={}).json() == {"sleep": ["Missing data for required field."]}


def test_class_entry_point_is_instantiated_and_warmed_per_worker(server):
    url = server + "/v2/models/class_style/predict/"
    answers = [requests.post(url, json={"x": 21}).json()["predictions"] for _ in range(6)]
    assert {a["double"] for a in answers} == {42} and all(a["warmed"] for a in answers)
    metadata = requests.get(server + "/v2/models/class_style/").json()
    assert metadata["instances"] == 1, "one instance per worker process"


@pytest.mark.parametrize(
    ("how", "status", "message"),
    [
        ("raise", 500, "RuntimeError: the model broke"),
        ("bad-schema", 500, "value"),
        ("not-json", 500, "value"),
        ("exit", 500, "exited with code 3"),
    ],
)
def test_plugin_failures_fail_one_request_and_the_server_keeps_serving(server, how, status, message):
    url = server + "/v2/models/failing/predict/"
    answer = requests.post(url, data={"how": how})
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert message in answer.json()["message"]
    assert "Traceback" not in answer.text
    assert requests.post(url, data={"how": "ok"}).json() == {"value": 1}


def test_plugin_validation_error_is_422_naming_the_field(server):
    answer = requests.post(server + "/v2/models/failing/predict/", data={"how": "invalid"})
    assert answer.status_code == 422 and answer.json() == {"how": ["this input makes no sense"]}


def test_failing_training_is_error_with_message(server):
    url = server + "/v2/models/failing/train/"
    training = requests.post(url, data={"fail": "true"}).json()
    for _ in range(300):
        state = requests.get(url + training["uuid"]).json()
        if state["status"] != "running":
            break
        import time

        time.sleep(0.1)
    assert state["status"] == "error" and state["message"] == "ValueError: training diverged"


def test_missing_hooks_answer_501(server):
    assert requests.post(server + "/v2/models/predict_only/train/").status_code == 501
    assert requests.post(server + "/v2/models/predict_only/predict/").json() == {
        "status": "OK",
        "predictions": [1, 2, 3],
    }
    assert requests.get(server + "/v2/models/predict_only/").json()["name"] == "predict_only"


def test_every_installed_model_is_served_without_model_name(tmp_path):
    from tests.conftest import make_plugin_site

    plugins = {"one": "predict_only", "two": "class_style:Model"}
    env = make_plugin_site(tmp_path / "site", plugins, namespace="deepaas_like.tests")
    server = start_server([], tmp_path, env=env, args=["--model-namespace", "deepaas_like.tests"])
    try:
        names = [m["id"] for m in requests.get(server + "/v2/models/").json()["models"]]
        assert names == ["one", "two"]
        assert requests.post(server + "/v2/models/two/predict/", data={"x": "2"}).json()["predictions"]["double"] == 4
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("not_installed", ["'not_installed' is not installed", "installed:", "demo"]),
        ("broken", ["'broken'", "ModuleNotFoundError", "a_module_that_does_not_exist"]),
    ],
)
def test_start_up_stops_with_a_message_naming_the_model(tmp_path, plugin_env, model, expected):
    process = subprocess.run(
        [
            "deepaas-like-run",
            f"--model-name={model}",
            "--listen-port=0",
            f"--database-url=sqlite+aiosqlite:///{tmp_path}/j.sqlite",
        ],
        env={**os.environ, **plugin_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1
    for text in expected:
        assert text in process.stderr


FIELD_EXPECTED = "where a marshmallow field is expected"
BAD_ARGUMENTS = [
    (
        "predict_type",
        f"get_predict_args() of model 'bad_arguments' gives 'factor' as the Python type float, {FIELD_EXPECTED}",
    ),
    ("train_type", f"get_train_args() of model 'bad_arguments' gives 'epochs' as the value 10, {FIELD_EXPECTED}"),
    (
        "schema_type",
        f"the schema attribute of model 'bad_arguments' gives 'score' as the Python type float, {FIELD_EXPECTED}",
    ),
    (
        "load_default",
        "get_predict_args() of model 'bad_arguments' gives 'times' a load_default of 'five', "
        "which fields.Integer cannot read (Not a valid integer.)",
    ),
]


@pytest.mark.parametrize(("defect", "expected"), BAD_ARGUMENTS)
def test_arguments_that_are_not_marshmallow_fields_stop_start_up_naming_them(tmp_path, plugin_env, defect, expected):
    # As a plugin that fails to load: the server does not start, and says why in one line.
    process = subprocess.run(
        [
            "deepaas-like-run",
            "--model-name=bad_arguments",
            "--listen-port=0",
            f"--database-url=sqlite+aiosqlite:///{tmp_path}/j.sqlite",
        ],
        env={**os.environ, **plugin_env, "BAD_ARGUMENTS": defect},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1, process.stderr
    assert expected in process.stderr and "Traceback" not in process.stderr


@pytest.mark.parametrize(("defect", "expected"), BAD_ARGUMENTS)
def test_the_cli_help_names_arguments_that_are_not_marshmallow_fields(plugin_env, defect, expected):
    process = subprocess.run(
        ["deepaas-like-cli", "--model-name", "bad_arguments", "predict", "--help"],
        env={**os.environ, **plugin_env, "BAD_ARGUMENTS": defect},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1 and f"deepaas-like-cli: {expected}" in process.stderr, process.stderr
    assert "Traceback" not in process.stderr and process.stdout == ""


def test_the_same_plugin_with_right_declarations_is_served(run_server, plugin_env):
    server = run_server("bad_arguments", env=plugin_env)
    answer = requests.post(server + "/v2/models/bad_arguments/predict/", data={"factor": "1.5"})
    assert answer.status_code == 200 and answer.json() == {"score": 7.5}, answer.text
