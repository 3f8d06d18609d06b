"""The gRPC front of a real ``deepaas-like-run --grpc-port`` on 127.0.0.1, called by real
grpcio clients built from the .proto files the server hands out (compiled with
``grpc_tools.protoc``), by reflection, and by the health service.
"""

from __future__ import annotations

import importlib
import io
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import descriptor_pool, json_format, message_factory, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from PIL import Image

from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site, png_bytes

USER, OTHER, ADMIN = "user-key", "other-key", "admin-key"
MODELS = ("demo", "deepaas_style", "slow", "failing", "nonfinite")


def key(value: str = USER) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory):
    env = make_plugin_site(tmp_path_factory.mktemp("site"), {**TEST_PLUGINS, "nonfinite": "nonfinite"})
    port = free_port()
    tokens = ["--auth-token", USER, "--auth-token", OTHER, "--admin-token", ADMIN]
    url = module_server(*MODELS, env=env, args=["--grpc-port", str(port), *tokens])
    url.grpc = f"127.0.0.1:{port}"
    return url


@pytest.fixture(scope="module")
def protos(server, tmp_path_factory) -> Path:
    """The .proto files as the server hands them out (GET /v2/models/{name}/protos)."""
    folder = tmp_path_factory.mktemp("protos")
    for name in MODELS:
        answer = requests.get(f"{server}/v2/models/{name}/protos", timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
        assert answer.headers["Content-Disposition"] == f'inline; filename="{name}.proto"'
        (folder / f"{name}.proto").write_text(answer.text)
    return folder


@pytest.fixture(scope="module")
def stubs(protos, tmp_path_factory):
    """Python modules compiled from the served .proto files: ``stubs["demo"]`` is
    ``(demo_pb2, demo_pb2_grpc)``."""
    out = tmp_path_factory.mktemp("stubs")
    files = [str(protos / f"{name}.proto") for name in MODELS]
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"--python_out={out}"]
    subprocess.run([*command, f"--grpc_python_out={out}", *files], check=True, capture_output=True)
    sys.path.insert(0, str(out))
    try:
        yield {
            name: (importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc"))
            for name in MODELS
        }
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc) as channel:
        yield channel


@pytest.fixture(scope="module")
def demo(stubs, channel):
    messages, services = stubs["demo"]
    return messages, services.DemoStub(channel)


def test_demo_predicts_json_and_png(demo, server):
    messages, stub = demo
    image = messages.File(content=png_bytes((40, 30)), filename="cat.png")
    answer = stub.Predict(messages.PredictRequest(image=image, size=16), metadata=key())
    assert answer.WhichOneof("result") == "prediction"
    prediction = answer.prediction
    assert (prediction.width, prediction.height, prediction.format, prediction.mode) == (40, 30, "PNG", "RGB")
    assert list(prediction.thumbnail_size) == [16, 12] and list(prediction.mean) == [10.0, 200.0, 30.0]

    png = stub.Predict(messages.PredictRequest(image=image, size=16, accept="image/png"), metadata=key())
    assert png.WhichOneof("result") == "file" and png.file.content_type == "image/png"
    assert Image.open(io.BytesIO(png.file.content)).size == (16, 12)

    metrics = requests.get(f"{server}/metrics", timeout=10).text
    assert 'deepaas_like_grpc_requests_total{code="OK",method="Predict",model="demo"}' in metrics


def test_each_call_has_an_access_line(demo, server):
    messages, stub = demo
    request_id = "grpc-access-line-test"
    image = messages.File(content=png_bytes((8, 8)), filename="cat.png")
    stub.Predict(messages.PredictRequest(image=image), metadata=(*key(), ("x-request-id", request_id)))
    with pytest.raises(grpc.RpcError):
        stub.Predict(
            messages.PredictRequest(image=image), metadata=(*key("wrong"), ("x-request-id", request_id + "-2"))
        )
    pattern = (
        r'INFO deepaas_like\.access \[{id}\] 127\.0\.0\.1:\d+ "gRPC /[\w.]+\.Demo/Predict" {code} \d+\.\d{{6}} '
        r'"grpc-python[^"]*" {id}$'
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = server.log.read_text()
        found = [
            re.search(pattern.format(id=re.escape(rid), code=code), log, re.MULTILINE)
            for rid, code in ((request_id, "OK"), (request_id + "-2", "UNAUTHENTICATED"))
        ]
        if all(found):
            break
        time.sleep(0.1)
    assert all(found), log[-3000:]


def test_invalid_arguments_answer_invalid_argument_naming_the_fields(demo):
    messages, stub = demo
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(messages.PredictRequest(size=2, filter="sepia"), metadata=key())
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    (detail,) = rpc_status.from_call(error).details
    assert detail.Unpack(bad_request)
    violations = {violation.field: violation.description for violation in bad_request.field_violations}
    assert violations == {
        "image": "Missing data for required field.",
        "size": "Must be greater than or equal to 8 and less than or equal to 1024.",
        "filter": "Must be one of: none, blur, edges, grayscale.",
    }


def test_a_plugin_that_rejects_its_input_answers_invalid_argument(demo):
    messages, stub = demo
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(messages.PredictRequest(image=messages.File(content=b"not an image")), metadata=key())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in raised.value.details()


class NewLog:
    """What the server logs from here on (``.text()``)."""

    def __init__(self, server) -> None:
        self.path, self.start = server.log, server.log.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")


def violations_of(error: grpc.RpcError) -> dict[str, str]:
    bad_request = error_details_pb2.BadRequest()
    (detail,) = rpc_status.from_call(error).details
    assert detail.Unpack(bad_request)
    return {violation.field: violation.description for violation in bad_request.field_violations}


def test_bytes_that_are_not_the_request_message_answer_invalid_argument_without_a_traceback(server, channel):
    log = NewLog(server)
    garbage = (b"\xff\xff\xff\xff garbage", b"\x0a\x05ab", b"\x12\x80")  # no varint, short, cut
    for method in ("/deepaas_like.v2.demo.Demo/Predict", "/deepaas_like.v2.demo.Demo/GetTraining"):
        call = channel.unary_unary(method)  # no serializers: the bytes are sent as they are
        for data in garbage:
            with pytest.raises(grpc.RpcError) as raised:
                call(data, metadata=key(), timeout=60)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data, raised.value.details())
            assert "is not a" in raised.value.details()
    watch = channel.unary_stream("/deepaas_like.v2.demo.Demo/WatchTraining")
    with pytest.raises(grpc.RpcError) as raised:
        list(watch(garbage[0], metadata=key(), timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/deepaas_like.v2.demo.Demo/Predict")(garbage[0], timeout=60)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, "the key is checked before the bytes are read"
    logged = log.text()
    assert "Traceback" not in logged and "DecodeError" not in logged, logged


def test_a_long_uuid_answers_not_found_with_a_bounded_message(demo, server):
    messages, stub = demo
    log = NewLog(server)
    long = messages.TrainingRequest(uuid="a" * 100_000)
    for method in (stub.GetTraining, stub.CancelTraining):
        with pytest.raises(grpc.RpcError) as raised:
            method(long, metadata=key(), timeout=60)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
        assert len(raised.value.details()) < 200 and "100000 characters" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.WatchTraining(long, metadata=key(), timeout=60))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    unknown = "0123456789abcdef" * 2
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTraining(messages.TrainingRequest(uuid=unknown), metadata=key(), timeout=60)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and unknown in raised.value.details()
    assert "Traceback" not in log.text()


def test_nan_or_infinity_in_json_arguments_answer_invalid_argument_naming_the_field(stubs, channel, server):
    messages, services = stubs["nonfinite"]
    stub = services.NonfiniteStub(channel)
    log = NewLog(server)
    nan, infinity = float("nan"), float("inf")
    settings = messages.PredictRequest.Settings(options=struct_pb2.Value(number_value=-infinity))
    for request, field in (
        (messages.PredictRequest(options=struct_pb2.Value(number_value=nan)), "options"),
        (
            messages.PredictRequest(items=[struct_pb2.Value(number_value=1), struct_pb2.Value(number_value=infinity)]),
            "items.1",
        ),
        (messages.PredictRequest(settings=settings), "settings.options"),
        (messages.PredictRequest(loose='{"a": NaN}'), "loose"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, metadata=key(), timeout=60)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        assert list(violations_of(raised.value)) == [field]
    answer = stub.Predict(messages.PredictRequest(options=struct_pb2.Value(number_value=1.5)), metadata=key())
    assert answer.prediction.predictions.struct_value["options"] == 1.5
    logged = log.text()
    assert "Traceback" not in logged and "ValueError" not in logged, logged


@pytest.mark.parametrize("number", ["nan", "inf"])
def test_a_training_that_ends_with_nan_or_infinity_is_answered_with_nulls(stubs, channel, number):
    messages, services = stubs["nonfinite"]
    stub = services.NonfiniteStub(channel)
    training = stub.Train(messages.TrainRequest(number=number), metadata=key(), timeout=60)
    events = list(stub.WatchTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key(), timeout=120))
    assert events[-1].event == "end" and events[-1].status == "done", events[-1]
    done = stub.GetTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key(), timeout=60)
    # As over HTTP, null: protobuf's JSON mapping (grpcurl's output) has no NaN in a Value.
    output = json_format.MessageToDict(done)["result"]["output"]
    assert output == {"loss": None, "history": [1.0, None], "nested": {"best": None}}
    listed = stub.ListTrainings(messages.ListTrainingsRequest(limit=100), metadata=key(), timeout=60)
    assert training.uuid in [item.uuid for item in listed.trainings]


def test_training_streams_its_progress_and_can_be_cancelled(demo):
    messages, stub = demo
    training = stub.Train(messages.TrainRequest(epochs=500, epoch_seconds=0.05), metadata=key())
    assert len(training.uuid) == 32 and training.status in ("pending", "running")
    assert dict(training.args) == {"epochs": 500, "epoch_seconds": 0.05, "learning_rate": 0.1, "seed": 0}
    events = stub.WatchTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key())
    running = next(event for event in events if event.event == "job" and event.training.progress > 0)
    assert running.training.status == "running" and running.training.events[-1].message.startswith("epoch ")
    cancelled = stub.CancelTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key())
    assert cancelled.status == "cancelled"
    rest = list(events)
    assert rest[-1].event == "end" and rest[-1].status == "cancelled"
    assert stub.GetTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key()).status == "cancelled"
    listed = stub.ListTrainings(messages.ListTrainingsRequest(status="cancelled", limit=5), metadata=key())
    assert training.uuid in [item.uuid for item in listed.trainings]


def test_a_finished_training_has_its_result(demo):
    messages, stub = demo
    training = stub.Train(messages.TrainRequest(epochs=3), metadata=key())
    events = list(stub.WatchTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key()))
    assert [event.event for event in events][-1] == "end" and events[-1].status == "done"
    done = stub.GetTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key())
    assert done.result.output.struct_value["a"] != 0 and done.result.duration > 0
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListTrainings(messages.ListTrainingsRequest(limit=0), metadata=key())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in raised.value.details()


def test_api_keys_are_checked_and_jobs_belong_to_theirs(demo):
    messages, stub = demo
    request = messages.TrainRequest(epochs=1)
    for metadata in ((), key("wrong"), (("x-api-key", "wrong"),)):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Train(request, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "API key" in raised.value.details()
    training = stub.Train(request, metadata=(("x-api-key", USER),))
    uuid = messages.TrainingRequest(uuid=training.uuid)
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTraining(uuid, metadata=key(OTHER))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.GetTraining(uuid, metadata=key(ADMIN)).uuid == training.uuid
    assert stub.GetTraining(uuid, metadata=key(USER)).uuid == training.uuid


def test_reflection_lists_and_describes_the_services(server):
    with grpc.insecure_channel(server.grpc) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "deepaas_like.v2.demo.Demo",
            "deepaas_like.v2.deepaas_style.DeepaasStyle",
            "deepaas_like.v2.slow.Slow",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= services
        # A client with no .proto file: the messages from reflection, then a call.
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("deepaas_like.v2.demo.Demo").methods_by_name["Predict"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        predict = channel.unary_unary(
            "/deepaas_like.v2.demo.Demo/Predict",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = request_class()
        request.image.content = png_bytes((8, 8))
        assert predict(request, metadata=key()).prediction.width == 8


def test_health_says_serving_for_the_server_and_each_model(server):
    with grpc.insecure_channel(server.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "deepaas_like.v2.demo.Demo", "deepaas_like.v2.slow.Slow"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == serving
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_deepaas_style_plugin_is_served_unchanged(stubs, channel):
    messages, services = stubs["deepaas_style"]
    stub = services.DeepaasStyleStub(channel)
    request = messages.PredictRequest(
        data=messages.File(content=b"1234", filename="input.bin"),
        extra=messages.File(content=b"x", filename="extra.txt"),
        threshold=0.7,
    )
    answer = stub.Predict(request, metadata=key()).prediction
    assert (answer.filename, answer.size, answer.label, answer.extra) == ("input.bin", 4, "cat", "extra.txt")
    assert list(answer.labels) == ["cat", "dog"] and answer.threshold == pytest.approx(0.7)
    request.accept = "image/png"
    png = stub.Predict(request, metadata=key())
    assert png.file.content_type == "image/png" and png.file.content.startswith(b"\x89PNG")
    request.accept = "application/zip"
    assert stub.Predict(request, metadata=key()).file.content_type == "application/zip"
    training = stub.Train(messages.TrainRequest(sleep=0), metadata=key())
    assert training.args["sleep"] == 0


def test_a_plugin_that_fails_fails_only_its_own_call(stubs, channel):
    messages, services = stubs["failing"]
    stub = services.FailingStub(channel)
    for how, code, words in (
        ("raise", grpc.StatusCode.INTERNAL, "RuntimeError: the model broke"),
        ("exit", grpc.StatusCode.INTERNAL, "exit"),
        ("bad-schema", grpc.StatusCode.INTERNAL, "schema"),
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "this input makes no sense"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(messages.PredictRequest(how=how), metadata=key())
        assert raised.value.code() == code and words in raised.value.details(), how
    assert stub.Predict(messages.PredictRequest(how="ok"), metadata=key(), timeout=60).prediction.value == 1
    training = stub.Train(messages.TrainRequest(), metadata=key())
    events = list(stub.WatchTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key()))
    assert events[-1].event == "end" and events[-1].status == "error"
    failed = stub.GetTraining(messages.TrainingRequest(uuid=training.uuid), metadata=key())
    assert "training diverged" in failed.message


def test_deadlines_and_cancels_end_the_call_and_the_server_keeps_serving(stubs, channel, demo):
    messages, services = stubs["slow"]
    stub = services.SlowStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(messages.PredictRequest(seconds=2), metadata=key(), timeout=0.3)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    call = stub.Predict.future(messages.PredictRequest(seconds=2), metadata=key())
    assert call.cancel()
    assert call.cancelled()
    demo_messages, demo_stub = demo
    image = demo_messages.File(content=png_bytes())
    assert demo_stub.Predict(demo_messages.PredictRequest(image=image), metadata=key()).prediction.width == 40
    answer = stub.Predict(messages.PredictRequest(seconds=0, accept="image/png"), metadata=key(), timeout=30)
    assert answer.file.content_type == "image/png"


@pytest.mark.parametrize("compiler", ["grpc_tools", "protoc"])
def test_the_dumped_protos_compile_and_the_cli_writes_the_served_file(compiler, protos, server, tmp_path):
    written = subprocess.run(
        [
            shutil.which("deepaas-like-cli") or "deepaas-like-cli",
            "--model-name",
            "demo",
            "protos",
            "--output",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tmp_path / "demo.proto").read_text() == (protos / "demo.proto").read_text(), written.stdout
    files = [str(protos / f"{name}.proto") for name in MODELS]
    if compiler == "protoc":
        if shutil.which("protoc") is None:
            pytest.skip("protoc is not installed (Debian: apt-get install protobuf-compiler)")
        command = ["protoc", f"-I{protos}", "-I/usr/include", f"--python_out={tmp_path}"]
    else:
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"--python_out={tmp_path}"]
    compiled = subprocess.run([*command, *files], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    assert {path.name for path in tmp_path.glob("*_pb2.py")} == {f"{name}_pb2.py" for name in MODELS}


def test_without_the_grpc_extra_grpc_port_fails_at_start_with_one_line(tmp_path):
    script = (
        "import sys; sys.modules['grpc'] = None\n"
        "from deepaas_like.cmd.run import main\n"
        f"sys.exit(main(['--model-name', 'demo', '--grpc-port', '50999', '--database-url', "
        f"'sqlite:///{tmp_path}/jobs.sqlite']))\n"
    )
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ended.returncode == 1
    assert ended.stderr.strip().splitlines()[-1] == (
        "deepaas-like-run: --grpc-port needs the grpc extra (grpcio missing): pip install 'deepaas_like[grpc]'"
    )


def test_a_grpc_port_in_use_fails_at_start_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [
            shutil.which("deepaas-like-run") or "deepaas-like-run",
            "--model-name=demo",
            f"--listen-port={free_port()}",
            f"--grpc-port={port}",
            f"--database-url=sqlite:///{tmp_path}/jobs.sqlite",
            f"--upload-dir={tmp_path}",
        ]
        ended = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 1, ended.stderr
    assert (
        ended.stderr.strip()
        .splitlines()[-1]
        .startswith(f"deepaas-like-run: cannot listen on 127.0.0.1:{port} for gRPC")
    )
