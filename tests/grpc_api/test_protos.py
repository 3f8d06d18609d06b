"""The marshmallow -> protobuf mapping: every field type the plugins in plugins_example/ and
tests/fixtures use (and the rest of marshmallow's), the JSON-string fallback, the .proto text
protoc reads back as the very descriptor the server serves, and the conversions of messages.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import importlib.resources
import os
import types
from collections.abc import Iterator
from pathlib import Path

import marshmallow
import pytest
from google.protobuf import descriptor_pb2, json_format
from grpc_tools import protoc
from marshmallow import fields, validate
from webargs import fields as webargs_fields

from deepaas_like.exceptions import InvalidArguments, PluginLoadError
from deepaas_like.grpc_api.messages import Messages, new_pool
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.protos.model_protos import ModelProtos, package_part
from deepaas_like.protos.text import proto_text
from deepaas_like.results import Prediction
from deepaas_like.serving.schemas import ArgumentsSchema, build_schema
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import Uploads
from deepaas_like.workers.inprocess import InProcessPool
from tests.conftest import NAMESPACE, TEST_PLUGINS, make_plugin_site

F = descriptor_pb2.FieldDescriptorProto
WELL_KNOWN = str(importlib.resources.files("grpc_tools") / "_proto")


class Point(marshmallow.Schema):
    x = fields.Float(required=True)
    y = fields.Float(required=True)


class Tree(marshmallow.Schema):
    name = fields.Str()
    children = fields.List(fields.Nested(lambda: Tree()))


class Shouty(fields.Field):
    """A plugin's own field type: nothing in protobuf says what it holds."""

    def _deserialize(self, value, attr, data, **kwargs):
        return str(value).upper()


#: Every marshmallow field type, as plugins declare them (argument name -> field).
ARGUMENTS = {
    "text": fields.Str(required=True, validate=validate.Length(min=1), metadata={"description": "Some text."}),
    "count": fields.Int(load_default=3, validate=validate.Range(min=1, max=10)),
    "ratio": fields.Float(load_default=0.5),
    "flag": fields.Bool(load_default=False),
    "number": fields.Number(),
    "price": fields.Decimal(),
    "when": fields.DateTime(),
    "day": fields.Date(),
    "clock": fields.Time(),
    "wait": fields.TimeDelta(),
    "email": fields.Email(),
    "url": fields.Url(),
    "id": fields.UUID(),
    "address": fields.IPv4(),
    "choice": fields.Str(validate=validate.OneOf(["a", "b"])),
    "labels": fields.List(fields.Str()),
    "scores": fields.List(fields.Float()),
    "matrix": fields.List(fields.List(fields.Int())),
    "pair": fields.Tuple((fields.Int(), fields.Str())),
    "options": fields.Dict(),
    "weights": fields.Dict(keys=fields.Str(), values=fields.Float()),
    "points_by_name": fields.Dict(keys=fields.Str(), values=fields.Nested(Point)),
    "anything": fields.Raw(),
    "plain": fields.Field(),
    "point": fields.Nested(Point),
    "points": fields.List(fields.Nested(Point)),
    "many_points": fields.Nested(Point, many=True),
    "tree": fields.Nested(Tree),
    "csv": webargs_fields.DelimitedList(fields.Str()),
    "image": fields.Field(required=True, metadata={"type": "file", "location": "form"}),
    "extra": webargs_fields.Field(type="file", location="form", missing=None, description="DEEPaaS style."),
    "data": fields.Raw(metadata={"type": "file"}),
    "shout": Shouty(),
    "data-file": fields.Str(),
    "accept": fields.Str(load_default="application/json", validate=validate.OneOf(["application/json", "image/png"])),
}
RESPONSE = {
    "width": fields.Int(required=True),
    "format": fields.Str(allow_none=True),
    "mean": fields.List(fields.Float(), required=True),
    "parameters": fields.Dict(required=True),
    "video": fields.Nested(Point, required=True),
    "captions": fields.List(fields.Nested(Point), required=True),
    "images": fields.List(fields.Str()),
}


def described(name: str = "every_type", predict=ARGUMENTS, train=None, response=RESPONSE) -> types.SimpleNamespace:
    """A started model as the builder sees it: its name and description."""
    return types.SimpleNamespace(name=name, description=ModelDescription(name, {}, predict, train, response))


def field_of(protos: ModelProtos, message: str, name: str) -> descriptor_pb2.FieldDescriptorProto:
    found = next(m for m in protos.file.message_type if m.name == message)
    return next(f for f in found.field if f.name == name)


def compiled(protos: ModelProtos, tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    """What protoc reads back from the printed .proto file (json_name, which protoc adds, aside)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / protos.file_name).write_text(proto_text(protos.file))
    out = tmp_path / "set.pb"
    status = protoc.main(
        ["protoc", f"-I{tmp_path}", f"-I{WELL_KNOWN}", f"--descriptor_set_out={out}", str(tmp_path / protos.file_name)]
    )
    assert status == 0, proto_text(protos.file)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    read = files[0]
    pending = list(read.message_type)
    while pending:
        message = pending.pop()
        for field in message.field:
            field.ClearField("json_name")
        pending += message.nested_type
    return read


def served(protos: ModelProtos) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto()
    file.CopyFrom(protos.file)
    file.ClearField("source_code_info")
    return file


@pytest.mark.parametrize(
    ("name", "kind", "label", "type_name"),
    [
        ("text", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("count", F.TYPE_INT64, F.LABEL_OPTIONAL, ""),
        ("ratio", F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
        ("flag", F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
        ("number", F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
        ("price", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("when", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("day", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("clock", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("wait", F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
        ("email", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("url", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("id", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("address", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("labels", F.TYPE_STRING, F.LABEL_REPEATED, ""),
        ("scores", F.TYPE_DOUBLE, F.LABEL_REPEATED, ""),
        ("matrix", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".google.protobuf.ListValue"),
        ("pair", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.ListValue"),
        ("options", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Struct"),
        ("weights", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".deepaas_like.v2.every_type.PredictRequest.WeightsEntry"),
        (
            "points_by_name",
            F.TYPE_MESSAGE,
            F.LABEL_REPEATED,
            ".deepaas_like.v2.every_type.PredictRequest.PointsByNameEntry",
        ),
        ("anything", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Value"),
        ("plain", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".google.protobuf.Value"),
        ("point", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".deepaas_like.v2.every_type.PredictRequest.Point"),
        ("points", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".deepaas_like.v2.every_type.PredictRequest.Points"),
        ("many_points", F.TYPE_MESSAGE, F.LABEL_REPEATED, ".deepaas_like.v2.every_type.PredictRequest.ManyPoints"),
        ("tree", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".deepaas_like.v2.every_type.PredictRequest.Tree"),
        ("csv", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("image", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".deepaas_like.v2.every_type.File"),
        ("extra", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".deepaas_like.v2.every_type.File"),
        ("data", F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".deepaas_like.v2.every_type.File"),
        ("shout", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("data_file", F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
    ],
)
def test_each_marshmallow_type_maps_as_the_table_says(name, kind, label, type_name):
    field = field_of(ModelProtos.build(described()), "PredictRequest", name)
    assert (field.type, field.label, field.type_name) == (kind, label, type_name)
    if kind != F.TYPE_MESSAGE and label != F.LABEL_REPEATED:
        assert field.proto3_optional, "an unset argument must stay unset, so that its default applies"


def test_a_type_without_a_protobuf_equivalent_is_a_json_string_with_a_warning():
    protos = ModelProtos.build(described())
    assert [w for w in protos.warnings if "shout" in w] == [
        "model 'every_type': PredictRequest.shout is a Shouty, which has no protobuf type here: "
        "it is a string holding JSON"
    ]
    assert "// JSON text (a Shouty: no protobuf type fits)." in proto_text(protos.file)


def test_response_fields_have_presence_unless_always_present():
    protos = ModelProtos.build(described())
    assert not field_of(protos, "Prediction", "width").proto3_optional
    assert field_of(protos, "Prediction", "format").proto3_optional
    assert field_of(protos, "Prediction", "parameters").type_name == ".google.protobuf.Struct"


def test_the_printed_file_is_what_protoc_reads_back(tmp_path):
    protos = ModelProtos.build(described(train={"epochs": fields.Int(load_default=1)}))
    assert compiled(protos, tmp_path) == served(protos)
    text = proto_text(protos.file)
    assert "rpc WatchTraining(TrainingRequest) returns (stream TrainingEvent);" in text
    assert "  // Some text. Required. Length: 1 <= length.\n  optional string text = 1;" in text
    assert "map<string, double> weights" in text
    assert "// The argument 'data-file'." in text


def test_names_that_are_not_identifiers_become_unique_ones():
    assert package_part("demo") == "demo"
    assert package_part("my-model") != package_part("my_model")
    assert package_part("my-model").startswith("my_model_")
    protos = ModelProtos.build(
        described("2-fast", predict={"class": fields.Int(), "None": fields.Int()}, response=None)
    )
    assert protos.package.startswith("deepaas_like.v2.m2_fast_")
    assert protos.service.endswith(".Model2Fast")
    assert [f.name for f in next(m for m in protos.file.message_type if m.name == "PredictRequest").field] == [
        "class",
        "_None",
    ]


def test_arguments_come_out_as_the_schema_loads_them(tmp_path):
    protos = ModelProtos.build(described())
    messages = Messages(protos, new_pool())
    request = messages.of("PredictRequest")()
    request.text = "hi"
    request.count = 2
    request.labels.extend(["cat", "dog"])
    request.matrix.add().extend([1, 2])
    request.weights["a"] = 0.5
    request.points_by_name["p"].x = 1
    request.points_by_name["p"].y = 2
    request.options.update({"k": "v"})
    request.anything.string_value = "raw"
    request.point.x, request.point.y = 3, 4
    request.price = "1.10"
    request.when = "2024-05-01T10:00:00"
    request.shout = '"quiet"'
    request.image.content = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    request.extra.content, request.extra.filename = b"some text", "notes.txt"
    with Uploads(str(tmp_path)) as uploads:
        raw = messages.arguments(request, uploads)
        assert "ratio" not in raw and "labels" in raw, "unset fields are left to the schema's defaults"
        loaded = build_schema(ARGUMENTS, "EveryType", ArgumentsSchema)().load(raw)
        assert loaded["count"] == 2 and loaded["ratio"] == 0.5 and loaded["labels"] == ["cat", "dog"]
        assert loaded["matrix"] == [[1, 2]] and loaded["weights"] == {"a": 0.5}
        assert loaded["points_by_name"] == {"p": {"x": 1.0, "y": 2.0}} and loaded["point"] == {"x": 3.0, "y": 4.0}
        assert loaded["options"] == {"k": "v"} and loaded["anything"] == "raw"
        assert loaded["price"] == decimal.Decimal("1.10") and loaded["when"] == datetime.datetime(2024, 5, 1, 10)
        assert loaded["shout"] == "QUIET"
        image, extra = loaded["image"], loaded["extra"]
        assert (image.name, image.content_type, image.original_filename) == ("image", "image/png", "image.png")
        assert Path(image.filename).read_bytes().startswith(b"\x89PNG")
        assert (extra.content_type, extra.original_filename) == ("application/octet-stream", "notes.txt")
        assert Path(image.filename).parent == Path(uploads.directory), "uploads live in the request's folder"


def test_a_json_text_argument_that_is_not_json_names_its_field(tmp_path):
    messages = Messages(ModelProtos.build(described()), new_pool())
    request = messages.of("PredictRequest")(shout="{not json")
    with pytest.raises(InvalidArguments) as raised, Uploads(str(tmp_path)) as uploads:
        messages.arguments(request, uploads)
    assert list(raised.value.messages) == ["shout"]


NAN, INFINITY = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("fill", "named"),
    [
        (lambda request: setattr(request.anything, "number_value", NAN), {"anything": ["NaN and Infinity"]}),
        (lambda request: request.options.update({"k": [1, INFINITY]}), {"options": ["NaN and Infinity"]}),
        (lambda request: request.matrix.add().extend([1, -INFINITY]), {"matrix": {0: ["NaN and Infinity"]}}),
        (
            lambda request: request.tree.children.add().update({"x": NAN}),
            {"tree": {"children": {0: ["NaN and Infinity"]}}},
        ),
        (lambda request: setattr(request, "shout", "[1, NaN]"), {"shout": ["not valid JSON: NaN is not"]}),
        (lambda request: setattr(request, "shout", "Infinity"), {"shout": ["not valid JSON: Infinity is not"]}),
    ],
)
def test_nan_or_infinity_in_json_data_is_refused_naming_the_field(fill, named, tmp_path):
    messages = Messages(ModelProtos.build(described()), new_pool())
    request = messages.of("PredictRequest")()
    fill(request)
    with pytest.raises(InvalidArguments) as raised, Uploads(str(tmp_path)) as uploads:
        messages.arguments(request, uploads)

    def starts(found, expected):  # the messages, each checked by its beginning
        if isinstance(expected, dict):
            return (
                isinstance(found, dict)
                and set(found) == set(expected)
                and all(starts(found[key], expected[key]) for key in expected)
            )
        return len(found) == 1 and found[0].startswith(expected[0])

    assert starts(raised.value.messages, named), raised.value.messages


def test_a_training_with_nan_or_infinity_is_sent_with_nulls_as_over_http():
    messages = Messages(ModelProtos.build(described(train={"epochs": fields.Int()})), new_pool())
    document = {
        "uuid": "a" * 32,
        "status": "done",
        "progress": NAN,
        "args": {"epochs": 2, "rate": INFINITY},
        "result": {
            "output": {"loss": NAN, "history": [1.0, -INFINITY]},
            "duration": "0:00:01.500000",
            "duration_seconds": 1.5,
        },
    }
    # messages.training() became messages.job() (issue 27: one message builder per REST document)
    training = messages.job(document)
    assert not training.HasField("progress") and training.result.duration == 1.5
    # Protobuf's JSON mapping (grpcurl prints answers with one) has no NaN in a Value.
    assert json_format.MessageToDict(training)["result"]["output"] == {"loss": None, "history": [1.0, None]}
    assert json_format.MessageToDict(training)["args"] == {"epochs": 2.0, "rate": None}


def test_a_prediction_becomes_the_typed_message_or_a_file():
    messages = Messages(ModelProtos.build(described()), new_pool())
    document = {
        "width": 3,
        "format": None,
        "mean": [1.5, 2],
        "parameters": {"seed": 7, "prompt": "x"},
        "video": {"x": 1, "y": 2},
        "captions": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
    }
    response = messages.predict_response(Prediction("application/json", document=document), None)
    assert response.WhichOneof("result") == "prediction"
    prediction = response.prediction
    assert prediction.width == 3 and not prediction.HasField("format") and list(prediction.mean) == [1.5, 2.0]
    assert dict(prediction.parameters) == {"seed": 7.0, "prompt": "x"}
    assert [(c.x, c.y) for c in prediction.captions] == [(1, 2), (3, 4)]
    binary = messages.predict_response(Prediction("image/png", data=b"png"), b"png")
    assert (binary.WhichOneof("result"), binary.file.content, binary.file.content_type) == ("file", b"png", "image/png")


def test_without_a_schema_the_prediction_is_deepaas_s_wrapper():
    messages = Messages(ModelProtos.build(described(response=None)), new_pool())
    document = {"status": "OK", "predictions": [{"label": "cat", "p": 0.9}]}
    response = messages.predict_response(Prediction("application/json", document=document), None)
    assert response.prediction.status == "OK"
    assert response.prediction.predictions.list_value.values[0].struct_value["label"] == "cat"


@pytest.fixture(scope="module")
def plugin_models(tmp_path_factory) -> Iterator[list[ServedModel]]:
    """Every example plugin and every test plugin that loads, described (not warmed)."""
    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)

    async def describe(name: str) -> ServedModel | None:
        pool = InProcessPool(name, NAMESPACE, warm=False)
        model = ServedModel(name, pool, lambda: pool)
        try:
            await model.start()
        except PluginLoadError:  # the broken test plugins fail to load, as they should
            return None
        return model

    with pytest.MonkeyPatch.context() as patch:
        for entry in reversed(env["PYTHONPATH"].split(os.pathsep)):
            patch.syspath_prepend(entry)
        names = ["demo", "text_classifier", "image_generation", "video_captioning", *TEST_PLUGINS]
        yield [model for model in (asyncio.run(describe(name)) for name in names) if model is not None]


def test_every_plugin_s_protos_compile_as_served(plugin_models, tmp_path):
    names = {model.name for model in plugin_models}
    assert {"demo", "text_classifier", "image_generation", "video_captioning", "deepaas_style", "ai4os_style"} <= names
    for model in plugin_models:
        protos = ModelProtos.build(model.schemas)  # protos are built from a model's schemas (issue 27)
        assert protos.warnings == [], model.name
        assert compiled(protos, tmp_path / model.name) == served(protos), model.name
        Messages(protos, new_pool())  # the pool takes it, message classes are made


def test_plugins_nested_schemas_and_dicts_become_messages_and_structs(plugin_models):
    # Protos are built from a model's schemas, not from its served model (issue 27).
    by_name = {model.name: ModelProtos.build(model.schemas) for model in plugin_models}
    video = by_name["video_captioning"]
    assert field_of(video, "Prediction", "captions").type_name.endswith(".Prediction.Captions")
    assert field_of(video, "Prediction", "captions").label == F.LABEL_REPEATED
    assert field_of(by_name["image_generation"], "Prediction", "parameters").type_name == ".google.protobuf.Struct"
    assert field_of(by_name["text_classifier"], "Prediction", "predictions").type_name == ".google.protobuf.Value"
    deepaas_style = by_name["deepaas_style"]
    assert field_of(deepaas_style, "PredictRequest", "labels").label == F.LABEL_REPEATED
    assert field_of(deepaas_style, "PredictRequest", "extra").type_name == ".deepaas_like.v2.deepaas_style.File"
    assert field_of(by_name["slow"], "PredictRequest", "data").type_name == ".deepaas_like.v2.slow.File"
