"""Schemathesis against the server's own OpenAPI document: a real server on 127.0.0.1
serving the demo plugin and the well-behaved test plugins must answer every generated
request (valid and invalid) without a 5xx, with a documented status code and media type,
and with a body its documented schema accepts.

The ``failing`` plugin is left out on purpose: it answers 500 by design.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.conftest import TEST_PLUGINS, make_plugin_site, png_bytes

# ``versioned`` makes model versions: its version routes are in the document too.
MODELS = ("demo", "deepaas_style", "class_style", "predict_only", "versioned")
# Every check schemathesis has ("--checks all"): no 5xx, documented status codes, media types,
# headers and bodies, invalid data rejected and valid data accepted, missing required headers,
# unsupported methods, Allow headers, deleted resources gone, ignored auth, and the rest.
load_all_checks()
CHECKS = REGISTERED_CHECKS.get_all()
assert len(CHECKS) >= 14, [check.__name__ for check in CHECKS]
# Examples per operation in the fuzzing phase; the examples and coverage phases add their
# own deterministic cases. About 40 operations: the whole run stays near a minute.
MAX_EXAMPLES = 25
SEED = 20240606
# Trainings of a model run one at a time, first in first out. A generated ``sleep`` of
# hours or ``epochs=10000`` with ``epoch_seconds=60`` would hold the queue, and the
# events stream of every later training would stay open past the run: cap the durations.
LONGEST_TRAINING = {"sleep": 0, "epochs": 20, "epoch_seconds": 0.0}
# Seconds a single request may take before the case fails (a hung handler, not slowness).
REQUEST_TIMEOUT = 60


@pytest.fixture(scope="module")
def api_schema(module_server, tmp_path_factory):
    """The document of a server serving :data:`MODELS`, as schemathesis loads it."""
    env = make_plugin_site(tmp_path_factory.mktemp("site"), {**TEST_PLUGINS, "versioned": "versioned"})
    server = module_server(*MODELS, env=env)
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"max-examples": MAX_EXAMPLES}})
    yield schemathesis.openapi.from_url(server + "/openapi.json", config=config)
    # A job still pending at shutdown keeps its uploads for the next start; let the
    # generated ones end so that the server stops with an empty upload folder.
    drain(server)


def drain(server: str, timeout: float = 60.0) -> None:
    """Wait until no training or asynchronous prediction of :data:`MODELS` is pending or running."""
    deadline = time.monotonic() + timeout
    for model in MODELS:
        for kind in ("train", "predict"):
            for status in ("pending", "running"):
                url = f"{server}/v2/models/{model}/{kind}/"
                while (
                    response := requests.get(url, params={"status": status}, timeout=10)
                ).status_code == 200 and response.json():
                    assert time.monotonic() < deadline, f"{model} {kind} jobs still {status} after {timeout} s"
                    time.sleep(0.2)


schema = schemathesis.pytest.from_fixture("api_schema")


def bound_training(case: schemathesis.Case) -> bool:
    """Lower the duration arguments of a generated training to :data:`LONGEST_TRAINING`;
    True when one was lowered (a value over the schema's maximum may so become valid: the
    case is no longer the invalid request it was generated as).
    """
    if case.method.upper() != "POST" or not case.path.endswith("/train/") or not isinstance(case.body, dict):
        return False
    lowered = False
    for name, longest in LONGEST_TRAINING.items():
        value: Any = case.body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > longest:
            case.body[name] = type(value)(longest)
            lowered = True
    return lowered


def header_text(name: str) -> bool:
    """Whether a property name can be a multipart field name: no control characters
    (RFC 9110 section 5.5 forbids them in header fields).
    """
    return all(character >= " " and character != "\x7f" for character in name)


# Plugins that check their input beyond its schema (the demo opens the image with Pillow):
# a schema-valid request may rightly get their 422.
CONTENT_CHECKED = {("POST", "/v2/models/demo/predict/")}


def excluded_checks(case: schemathesis.Case) -> list:
    """Checks that cannot hold for a case, each for a reason outside the server:

    - multipart form fields are text: an array, object or number sent as a part is the string
      it prints as, which may well be a valid value (a label "{}"), so a type violation cannot
      be told from a valid string; and property names with control characters cannot be part
      headers at all: such a request is malformed HTTP, rightly refused;
    - ``2.0`` for an integer is valid by JSON Schema since draft 6 and invalid by draft 4, and
      schemathesis generates it as either (the server takes it in JSON, as marshmallow's
      ``Integer`` does, and refuses the text "2.0" in a form, as marshmallow does);
    - a plugin that checks content (:data:`CONTENT_CHECKED`) refuses generated files.
    """
    excluded = []
    body = case.body if isinstance(case.body, dict) else {}
    if case.media_type == "multipart/form-data":
        excluded.append(negative_data_rejection)
        if not all(header_text(name) for name in body):
            excluded.append(positive_data_acceptance)
    if any(isinstance(value, float) and value.is_integer() for value in body.values()):
        excluded += [negative_data_rejection, positive_data_acceptance]
    if (case.method.upper(), case.path) in CONTENT_CHECKED:
        excluded.append(positive_data_acceptance)
    return excluded


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_response_is_documented_and_no_server_error(case: schemathesis.Case) -> None:
    lowered = bound_training(case)
    if case.headers and "Idempotency-Key" in case.headers:
        # The generator draws keys from a few strings; a key names one request, and the same
        # key with other arguments is rightly refused (422), so each case gets its own.
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    excluded = excluded_checks(case) + ([negative_data_rejection] if lowered else [])
    case.call_and_validate(checks=[check for check in CHECKS if check not in excluded], timeout=REQUEST_TIMEOUT)


# Generated data never reaches some answers: a generated ``image`` is never a real image,
# and a generated job uuid never names a job. These cases send real ones and hold the
# answers to the same document and checks.


def call(api_schema, method: str, path: str, **kwargs: Any) -> schemathesis.Response:
    """Send one hand-written case of the documented operation ``method path`` and validate
    its answer with :data:`CHECKS`; ``kwargs`` are :meth:`APIOperation.Case` arguments.
    """
    case = api_schema[path][method].Case(**kwargs)
    return case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT)


def finished(api_schema, path: str, uuid: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the job at ``path`` (a ``.../{uuid}`` operation) until it has ended; its object."""
    deadline = time.monotonic() + timeout
    while True:
        job = call(api_schema, "GET", path, path_parameters={"uuid": uuid}).json()
        if job["status"] not in ("pending", "running"):
            return job
        assert time.monotonic() < deadline, f"job {uuid} still {job['status']} after {timeout} s"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("media_type", "form_accept", "header_accept"),
    [
        ("application/json", None, None),
        ("image/png", "image/png", None),
        ("application/zip", None, "application/zip"),
    ],
)
def test_demo_predictions_of_a_real_image_match_the_document(api_schema, media_type, form_accept, header_accept):
    body: dict[str, Any] = {"image": png_bytes(), "size": 16, "filter": "edges"}
    if form_accept:
        body["accept"] = form_accept
    headers = {"Accept": header_accept} if header_accept else None
    response = call(
        api_schema, "POST", "/v2/models/demo/predict/", body=body, media_type="multipart/form-data", headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"][0].split(";")[0] == media_type


@pytest.mark.parametrize(
    ("model", "body"),
    [("demo", {"epochs": 3, "seed": 1}), ("deepaas_style", {"sleep": 0}), ("deepaas_style", {"sleep": -1})],
    ids=["demo-done", "deepaas_style-done", "deepaas_style-error"],
)
def test_a_training_from_start_to_delete_matches_the_document(api_schema, model, body):
    trainings = f"/v2/models/{model}/train/"
    started = call(api_schema, "POST", trainings, body=body, media_type="application/json")
    assert started.status_code == 200
    uuid = started.json()["uuid"]
    job = finished(api_schema, trainings + "{uuid}", uuid)
    assert job["status"] == ("error" if body.get("sleep", 0) < 0 else "done")
    events = call(api_schema, "GET", trainings + "{uuid}/events", path_parameters={"uuid": uuid})
    assert events.status_code == 200
    listed = call(api_schema, "GET", trainings, query={"status": job["status"], "order": "desc", "limit": 5})
    assert uuid in [training["uuid"] for training in listed.json()]
    cancelled = call(api_schema, "DELETE", trainings + "{uuid}", path_parameters={"uuid": uuid})
    assert cancelled.status_code == 200
    missing = call(api_schema, "GET", trainings + "{uuid}", path_parameters={"uuid": "0" * 32})
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("model", "body", "result_type"),
    [
        ("demo", {"image": png_bytes(), "accept": "image/png"}, "image/png"),
        ("deepaas_style", {"data": b"0123", "accept": "application/zip"}, "application/zip"),
        ("class_style", {"x": 3}, "application/json"),
        ("predict_only", {}, "application/json"),
    ],
    ids=["demo", "deepaas_style", "class_style", "predict_only"],
)
def test_an_asynchronous_prediction_matches_the_document(api_schema, model, body, result_type):
    predictions = f"/v2/models/{model}/predict/"
    queued = call(api_schema, "POST", predictions, body=body, media_type="multipart/form-data", query={"async": "true"})
    assert queued.status_code == 202
    uuid = queued.json()["uuid"]
    assert finished(api_schema, predictions + "{uuid}", uuid)["status"] == "done"
    result = call(
        api_schema, "GET", predictions + "{uuid}", path_parameters={"uuid": uuid}, headers={"Accept": result_type}
    )
    assert result.headers["content-type"][0].split(";")[0] == result_type
    call(api_schema, "GET", predictions + "{uuid}/events", path_parameters={"uuid": uuid})
    call(api_schema, "GET", predictions, query={"limit": 3})
    call(api_schema, "DELETE", predictions + "{uuid}", path_parameters={"uuid": uuid})


@pytest.mark.parametrize("path", ["/", "/v2/", "/v2/models/", "/v2/models/demo/", "/v2/models/predict_only/"])
def test_the_fixed_documents_match_the_document(api_schema, path):
    assert call(api_schema, "GET", path).status_code == 200
