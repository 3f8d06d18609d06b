"""What the gRPC front gained through the call service (issue 27), on a real
``deepaas-like-run --grpc-port`` called by grpcio clients compiled from the served .proto
files: asynchronous predictions, the ``idempotency-key`` metadata, and model versions
(predict with a version, list, get, promote, roll back, delete) under the API keys'
ownership, as the REST routes have them.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import grpc
import pytest
import requests

from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site, png_bytes
from tests.versions.helpers import FAST

USER, OTHER, ADMIN = "user-key", "other-key", "admin-key"
MODELS = ("demo", "versioned")


def key(value: str = USER, idempotency: str | None = None) -> tuple[tuple[str, str], ...]:
    metadata = (("authorization", f"Bearer {value}"),)
    return metadata if idempotency is None else (*metadata, ("idempotency-key", idempotency))


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory):
    env = make_plugin_site(tmp_path_factory.mktemp("site"), {**TEST_PLUGINS, "versioned": "versioned"})
    port = free_port()
    tokens = ["--auth-token", USER, "--auth-token", OTHER, "--admin-token", ADMIN]
    url = module_server(*MODELS, env=env, args=["--grpc-port", str(port), *tokens, *FAST])
    url.grpc = f"127.0.0.1:{port}"
    return url


@pytest.fixture(scope="module")
def stubs(server, tmp_path_factory):
    """``stubs[name]``: (messages module, stub) compiled from the .proto the server hands out."""
    folder, out = tmp_path_factory.mktemp("protos"), tmp_path_factory.mktemp("stubs")
    for name in MODELS:
        answer = requests.get(f"{server}/v2/models/{name}/protos", timeout=10)
        assert answer.status_code == 200
        (folder / f"{name}.proto").write_text(answer.text)
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", f"--python_out={out}"]
    files = [str(folder / f"{name}.proto") for name in MODELS]
    subprocess.run([*command, f"--grpc_python_out={out}", *files], check=True, capture_output=True)
    sys.path.insert(0, str(out))
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            yield {
                name: (
                    importlib.import_module(f"{name}_pb2"),
                    getattr(importlib.import_module(f"{name}_pb2_grpc"), f"{name.capitalize()}Stub")(channel),
                )
                for name in MODELS
            }
    finally:
        sys.path.remove(str(out))


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


def test_an_asynchronous_prediction_is_submitted_watched_read_and_listed(stubs):
    messages, stub = stubs["demo"]
    request = messages.PredictRequest(image=messages.File(content=png_bytes((40, 30)), filename="cat.png"), size=16)
    job = stub.SubmitPrediction(request, metadata=key(), timeout=30)
    assert len(job.uuid) == 32 and job.status in ("pending", "running")
    named = messages.PredictionJobRequest(uuid=job.uuid)
    events = list(stub.WatchPrediction(named, metadata=key(), timeout=120))
    assert events[-1].event == "end" and events[-1].status == "done"
    done = stub.GetPrediction(named, metadata=key())
    assert done.status == "done" and done.result.output.struct_value["width"] == 40  # the schema's document
    listed = stub.ListPredictions(messages.ListPredictionJobsRequest(status="done"), metadata=key())
    assert job.uuid in [item.uuid for item in listed.predictions]
    # Another key's: not found, as over REST; an admin key sees it.
    assert refused(stub.GetPrediction, named, metadata=key(OTHER)).code() == grpc.StatusCode.NOT_FOUND
    assert stub.GetPrediction(named, metadata=key(ADMIN)).uuid == job.uuid
    assert stub.CancelPrediction(named, metadata=key()).status == "done"  # ended: unchanged
    bad = refused(stub.GetPrediction, messages.PredictionJobRequest(uuid="x"), metadata=key())
    assert bad.code() == grpc.StatusCode.NOT_FOUND and "no prediction 'x'" in bad.details()


def test_an_idempotency_key_gets_the_first_job_and_is_checked_as_the_http_header(stubs):
    messages, stub = stubs["demo"]
    training = messages.TrainRequest(epochs=1)
    first = stub.Train(training, metadata=key(idempotency="train-1"))
    assert stub.Train(training, metadata=key(idempotency="train-1")).uuid == first.uuid
    assert stub.Train(training, metadata=key(idempotency="train-2")).uuid != first.uuid
    assert stub.Train(training, metadata=key(OTHER, idempotency="train-1")).uuid != first.uuid  # per API key
    reused = refused(stub.Train, messages.TrainRequest(epochs=2), metadata=key(idempotency="train-1"))
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT and "other arguments" in reused.details()  # 422 over REST
    too_long = refused(stub.Train, training, metadata=key(idempotency="k" * 256))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency-key must be 1 to 255 printable ASCII characters" in too_long.details()
    twice = refused(stub.Train, training, metadata=(*key(idempotency="a"), ("idempotency-key", "b")))
    assert twice.code() == grpc.StatusCode.INVALID_ARGUMENT and "send one idempotency-key metadata" in twice.details()

    image = messages.File(content=png_bytes((8, 8)), filename="cat.png")
    prediction = messages.PredictRequest(image=image)
    job = stub.SubmitPrediction(prediction, metadata=key(idempotency="predict-1"))
    assert stub.SubmitPrediction(prediction, metadata=key(idempotency="predict-1")).uuid == job.uuid


def test_model_versions_are_served_and_managed_under_the_keys_ownership(stubs):
    messages, stub = stubs["versioned"]
    training = stub.Train(messages.TrainRequest(value=7, steps=3), metadata=key(), timeout=30)
    events = list(stub.WatchTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key(), timeout=120))
    assert events[-1].status == "done"

    listing = stub.ListVersions(messages.ListVersionsRequest(), metadata=key())
    assert not listing.HasField("promoted_version")
    [version] = listing.versions
    assert (version.id, version.version, version.parent) == ("versioned@1", 1, "versioned")
    assert version.training == training.uuid and dict(version.arguments)["value"] == 7
    hidden = stub.GetVersion(messages.VersionRequest(version=1), metadata=key(OTHER))
    assert hidden.id == "versioned@1" and not hidden.HasField("training")  # another key's training

    answer = stub.PredictVersion(
        messages.VersionPredictRequest(version=1, arguments=messages.PredictRequest(x=3)), metadata=key(), timeout=150
    )
    predicted = answer.prediction.predictions.struct_value
    assert (predicted["value"], predicted["x"], predicted["loaded"]) == (7, 3, True)
    missing = refused(stub.PredictVersion, messages.VersionPredictRequest(version=9), metadata=key())
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    one = messages.VersionRequest(version=1)
    denied = refused(stub.PromoteVersion, one, metadata=key())
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "admin key" in denied.details()
    serving = stub.PromoteVersion(one, metadata=key(ADMIN), timeout=150)
    assert (serving.model, serving.promoted_version) == ("versioned", "versioned@1")
    by_name = stub.Predict(messages.PredictRequest(x=1), metadata=key(), timeout=150)
    assert by_name.prediction.predictions.struct_value["value"] == 7  # the name serves its promoted version
    conflict = refused(stub.DeleteVersion, one, metadata=key(ADMIN))
    assert conflict.code() == grpc.StatusCode.ABORTED and "promote another version or roll back" in conflict.details()
    assert not stub.RollbackVersion(messages.RollbackRequest(), metadata=key(ADMIN)).HasField("promoted_version")
    deleted = stub.DeleteVersion(one, metadata=key(ADMIN))
    assert (deleted.id, deleted.state) == ("versioned@1", "deleted")
    assert refused(stub.GetVersion, one, metadata=key()).code() == grpc.StatusCode.NOT_FOUND
