"""A model's gRPC API as protocol buffers: one ``.proto`` file per model (a
``FileDescriptorProto``), built from the plugin's argument and response schemas.

The server adds the file to a descriptor pool and serves it; ``.proto`` text is printed
from the same descriptor (:mod:`deepaas_like.protos.text`), so the service and the
file a client compiles cannot disagree. How marshmallow fields map to protobuf is the
table in doc/grpc.rst; :func:`ModelProtos.build` applies it.

Names: the file ``<model>.proto`` holds the package ``deepaas_like.v2.<model>`` and the
service ``<Model>`` (CamelCase). A model name that is not an identifier is made one, with
a short hash of the name so that two models never share a package. Field numbers follow the
order in which the plugin declares its arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

import marshmallow
from google.protobuf import descriptor_pb2
from marshmallow import fields, validate
from webargs.fields import DelimitedFieldMixin

from deepaas_like.model.args import is_file_field
from deepaas_like.serving.schemas import MAX_LIMIT, ModelSchemas, camel_case

__all__ = [
    "JSON_TYPES",
    "JSON_VALUES",
    "PACKAGE",
    "PREDICT_METHODS",
    "SCALARS",
    "SIGNATURES",
    "TRAIN_METHODS",
    "VERSION_METHODS",
    "ModelProtos",
    "Slot",
    "package_part",
]

PACKAGE = "deepaas_like.v2"
STRUCT_FILE = "google/protobuf/struct.proto"
STRUCT, VALUE, LIST_VALUE = ".google.protobuf.Struct", ".google.protobuf.Value", ".google.protobuf.ListValue"
#: Messages that carry JSON values (converted with ``json_format``).
JSON_TYPES = frozenset(name[1:] for name in (STRUCT, VALUE, LIST_VALUE))

_Field = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _Field.LABEL_OPTIONAL, _Field.LABEL_REPEATED
STRING, BYTES, BOOL, INT64, DOUBLE, MESSAGE = (
    _Field.TYPE_STRING,
    _Field.TYPE_BYTES,
    _Field.TYPE_BOOL,
    _Field.TYPE_INT64,
    _Field.TYPE_DOUBLE,
    _Field.TYPE_MESSAGE,
)

#: Scalar marshmallow fields and the protobuf type of each (the first class in a field's
#: MRO that is here decides, so subclasses map as their base). Dates and times are ISO 8601
#: strings, decimals strings (exact), time deltas numbers of the field's unit.
SCALARS: dict[type[fields.Field], int] = {
    fields.Boolean: BOOL,
    fields.Integer: INT64,
    fields.Decimal: STRING,
    fields.Float: DOUBLE,
    fields.Number: DOUBLE,
    fields.TimeDelta: DOUBLE,
    fields.String: STRING,
    fields.DateTime: STRING,
    fields.IP: STRING,
    fields.IPInterface: STRING,
    fields.Enum: STRING,
}
#: Fields whose values are any JSON (``google.protobuf.Value``).
JSON_VALUES: tuple[type[fields.Field], ...] = (fields.Raw, fields.Method, fields.Function)

#: The RPCs of a model's service, by the hook they need.
PREDICT_METHODS = (
    "Predict",
    "SubmitPrediction",
    "GetPrediction",
    "ListPredictions",
    "CancelPrediction",
    "WatchPrediction",
)
TRAIN_METHODS = ("Train", "GetTraining", "ListTrainings", "CancelTraining", "WatchTraining")
#: The RPCs of a model whose trainings make versions (the plugin has save and load).
VERSION_METHODS = ("PredictVersion", "ListVersions", "GetVersion", "PromoteVersion", "RollbackVersion", "DeleteVersion")
#: RPC -> (request message, response message, server streaming).
SIGNATURES = {
    "Predict": ("PredictRequest", "PredictResponse", False),
    "Train": ("TrainRequest", "Training", False),
    "GetTraining": ("TrainingRequest", "Training", False),
    "ListTrainings": ("ListTrainingsRequest", "ListTrainingsResponse", False),
    "CancelTraining": ("TrainingRequest", "Training", False),
    "WatchTraining": ("TrainingRequest", "TrainingEvent", True),
    "SubmitPrediction": ("PredictRequest", "PredictionJob", False),
    "GetPrediction": ("PredictionJobRequest", "PredictionJob", False),
    "ListPredictions": ("ListPredictionJobsRequest", "ListPredictionJobsResponse", False),
    "CancelPrediction": ("PredictionJobRequest", "PredictionJob", False),
    "WatchPrediction": ("PredictionJobRequest", "PredictionJobEvent", True),
    "PredictVersion": ("VersionPredictRequest", "PredictResponse", False),
    "ListVersions": ("ListVersionsRequest", "ListVersionsResponse", False),
    "GetVersion": ("VersionRequest", "ModelVersion", False),
    "PromoteVersion": ("VersionRequest", "Serving", False),
    "RollbackVersion": ("RollbackRequest", "Serving", False),
    "DeleteVersion": ("VersionRequest", "ModelVersion", False),
}
_METHOD_COMMENTS = {
    "Predict": "Runs the model's predict() on the arguments. The answer is JSON data (`prediction`) or a\n"
    "file (`file`: PNG, ZIP, ...), as the `accept` argument chooses, where the model offers one.",
    "Train": 'Starts a training (a job) and answers at once with it, status "pending" or "running".',
    "GetTraining": "The training `uuid`.",
    "ListTrainings": "Trainings of this model, oldest first (of this API key, unless an admin key).",
    "CancelTraining": "Cancels a pending or running training (its worker is killed); returns the training.",
    "WatchTraining": "The training's changes as they happen, the events of the REST API's event stream: a \"job\"\n"
    'event with the training whenever it changes, then "end" once it has ended. The stream also\n'
    'ends, without "end", when the server stops: call again.',
    "SubmitPrediction": "Starts an asynchronous prediction (a job) and answers at once with it, as the REST API's\n"
    "`Prefer: respond-async`. Metadata `idempotency-key` names it: a retry gets the first job.",
    "GetPrediction": "The asynchronous prediction `uuid`; once done, its JSON result in `result.output`.",
    "ListPredictions": "Asynchronous predictions of this model, oldest first (of this API key, unless an admin key).",
    "CancelPrediction": "Cancels a pending or running asynchronous prediction; returns it.",
    "WatchPrediction": 'The asynchronous prediction\'s changes as they happen: "job" events, then "end".',
    "PredictVersion": "Predict with the model version `version` (the REST API's model `name@version`).",
    "ListVersions": "The versions trainings made, newest first, and the one the model's name serves.",
    "GetVersion": "The model version `version`.",
    "PromoteVersion": "Has the model's name serve the version from now on (with API keys: an admin key).",
    "RollbackVersion": "Undoes the latest promotion (with API keys: an admin key).",
    "DeleteVersion": "Deletes the version: its workers, record and directory (with API keys: an admin key).",
}
_KEYWORDS_OF_PYTHON = frozenset(("None", "True", "False"))  # protoc's Python output cannot name fields so


@dataclasses.dataclass(frozen=True)
class Slot:
    """One field of a generated message: it carries the argument or response value ``key``
    in the proto field ``name``; ``json`` marks the fallback, a string holding JSON.
    """

    key: str
    name: str
    json: bool = False


@dataclasses.dataclass(frozen=True)
class _Mapped:
    """How one marshmallow field is declared in protobuf."""

    type: int
    type_name: str = ""
    repeated: bool = False
    map: bool = False
    json: bool = False
    comment: str = ""


@dataclasses.dataclass
class ModelProtos:
    """The protocol buffers of one model: ``file`` (its ``.proto``), the full name of its
    ``service`` and its ``methods``; ``slots`` maps each generated message's full name to
    the fields that carry arguments or response values; ``warnings`` name the fields that
    fell back to JSON strings.
    """

    model: str
    package: str
    service: str
    methods: tuple[str, ...]
    file: descriptor_pb2.FileDescriptorProto
    slots: dict[str, tuple[Slot, ...]]
    warnings: list[str]

    @property
    def file_name(self) -> str:
        return self.file.name

    @classmethod
    def build(cls, model: ModelSchemas) -> ModelProtos:
        """The protocol buffers of the model ``model`` describes (its name and its plugin's
        description). Types the
        mapping cannot express become JSON strings, named in ``warnings``; never an error.
        """
        return _Builder(model).build()


def package_part(model: str) -> str:
    """The last part of a model's package: its name when that is an identifier, else the name
    made one, with a hash of it (``my-model`` -> ``my_model_1a2b3c``).
    """
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model):
        return model
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", model) or "model"
    if cleaned[0].isdigit():
        cleaned = "m" + cleaned
    return f"{cleaned}_{hashlib.sha256(model.encode()).hexdigest()[:6]}"


def _camel(name: str) -> str:
    """protoc's CamelCase of a field name (as in map entry names): ``foo_bar`` -> ``FooBar``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class _Message:
    """A message being built: its descriptor, full name, path in the file (for comments),
    and the names taken in it.
    """

    def __init__(self, proto: descriptor_pb2.DescriptorProto, full_name: str, path: list[int]) -> None:
        self.proto = proto
        self.full_name = full_name
        self.path = path
        self.slots: list[Slot] = []
        #: Map entry messages, added after the fields' nested messages: protoc adds them
        #: as it reads the fields, which the printed text has after the nested messages.
        self.entries: list[descriptor_pb2.DescriptorProto] = []
        self._json_names: set[str] = set()

    def field_name(self, key: str) -> str:
        """A field name for ``key``: the key when it is an identifier not yet taken, else one
        made from it. protoc refuses two fields whose JSON names differ only in case.
        """
        base = re.sub(r"[^A-Za-z0-9_]", "_", key) or "field"
        if base[0].isdigit() or base in _KEYWORDS_OF_PYTHON:
            base = "_" + base
        name, number = base, 1
        while name.replace("_", "").lower() in self._json_names:
            number += 1
            name = f"{base}_{number}"
        self._json_names.add(name.replace("_", "").lower())
        return name

    def nested_name(self, name: str) -> str:
        taken = {nested.name for nested in [*self.proto.nested_type, *self.entries]}
        base, number = _camel(name) or "Value", 1
        while base in taken or base == self.proto.name:
            number += 1
            base = f"{_camel(name)}{number}"
        return base


class _Builder:
    def __init__(self, model: ModelSchemas) -> None:
        self.model = model
        part = package_part(model.name)
        self.package = f"{PACKAGE}.{part}"
        self.file = descriptor_pb2.FileDescriptorProto(
            name=f"{part}.proto", package=self.package, syntax="proto3", dependency=[STRUCT_FILE]
        )
        self.slots: dict[str, tuple[Slot, ...]] = {}
        self.warnings: list[str] = []

    def build(self) -> ModelProtos:
        description = self.model.description
        methods: list[str] = []
        self._comment(
            [12],
            f"The gRPC API of the model {self.model.name!r}, generated by deepaas_like from the\n"
            "plugin's argument and response schemas (see doc/grpc.rst of deepaas_like).",
        )
        self._file_message()
        if description.predict_args is not None:
            methods += PREDICT_METHODS
            self._arguments("PredictRequest", description.predict_args, "Arguments of predict().")
            self._prediction(description.response_fields)
        if description.train_args is not None:
            methods += TRAIN_METHODS
            self._arguments("TrainRequest", description.train_args, "Arguments of train().")
            self._job_messages("Training", "training", "Trainings")
        if description.predict_args is not None:
            self._job_messages("PredictionJob", "asynchronous prediction", "Predictions")
        if description.predict_args is not None and description.train_args is not None and description.versions:
            methods += VERSION_METHODS
            self._version_messages()
        service = camel_case(self.model.name) or "Model"
        if service[0].isdigit() or service in {message.name for message in self.file.message_type}:
            service = f"Model{service}"
        self._service(service, methods)
        return ModelProtos(
            self.model.name,
            self.package,
            f"{self.package}.{service}",
            tuple(methods),
            self.file,
            self.slots,
            self.warnings,
        )

    # Messages ------------------------------------------------------------------------

    def _top(self, name: str, comment: str) -> _Message:
        index = len(self.file.message_type)
        message = _Message(self.file.message_type.add(name=name), f"{self.package}.{name}", [4, index])
        self._comment(message.path, comment)
        return message

    def _add(
        self,
        message: _Message,
        name: str,
        kind: int,
        *,
        type_name: str = "",
        repeated: bool = False,
        optional: bool = False,
        comment: str = "",
        oneof: int | None = None,
    ) -> descriptor_pb2.FieldDescriptorProto:
        """Add a field numbered after the last one; ``optional`` gives a scalar presence."""
        index = len(message.proto.field)
        field = message.proto.field.add(
            name=name, number=index + 1, type=kind, label=_REPEATED if repeated else _OPTIONAL
        )
        if type_name:
            field.type_name = type_name
        if oneof is not None:
            field.oneof_index = oneof
        elif optional and not repeated and kind != MESSAGE:
            field.proto3_optional = True
            field.oneof_index = len(message.proto.oneof_decl)
            message.proto.oneof_decl.add(name=f"_{name}")
        self._comment([*message.path, 2, index], comment)
        return field

    def _fixed(self, name: str, comment: str, *specs: tuple[Any, ...]) -> _Message:
        """A message of fixed fields: (name, type, type_name, repeated, optional, comment)."""
        message = self._top(name, comment)
        for field_name, kind, type_name, repeated, optional, field_comment in specs:
            self._add(
                message,
                field_name,
                kind,
                type_name=type_name,
                repeated=repeated,
                optional=optional,
                comment=field_comment,
            )
            message.slots.append(Slot(field_name, field_name))
        self.slots[message.full_name] = tuple(message.slots)
        return message

    def _file_message(self) -> None:
        self._fixed(
            "File",
            "A file: an uploaded argument (it reaches the plugin as an UploadedFile), or a binary prediction.",
            ("content", BYTES, "", False, False, "The file's bytes."),
            ("filename", STRING, "", False, False, "Its name (optional; the plugin sees it as original_filename)."),
            ("content_type", STRING, "", False, False, "Its media type, e.g. image/png (optional for uploads)."),
        )

    def _arguments(self, name: str, arguments: dict[str, fields.Field], comment: str) -> None:
        message = self._top(name, comment + " Unset fields take the model's defaults.")
        self._fields(message, arguments, request=True, seen=())

    def _prediction(self, response_fields: dict[str, fields.Field] | None) -> None:
        if response_fields is None:
            self._fixed(
                "Prediction",
                "The JSON answer of predict(), as DEEPaaS wraps a model's result when the model has no schema.",
                ("status", STRING, "", False, False, '"OK".'),
                ("predictions", MESSAGE, VALUE, False, False, "What predict() returned."),
            )
        else:
            message = self._top("Prediction", "The JSON answer of predict(), as the model's schema declares it.")
            self._fields(message, response_fields, request=False, seen=())
        response = self._top("PredictResponse", "The answer of Predict: JSON data or a file.")
        response.proto.oneof_decl.add(name="result")
        self._add(
            response,
            "prediction",
            MESSAGE,
            type_name=f".{self.package}.Prediction",
            oneof=0,
            comment="JSON data (accept: application/json, or the model offers no choice).",
        )
        self._add(
            response, "file", MESSAGE, type_name=f".{self.package}.File", oneof=0, comment="Binary data (PNG, ZIP...)."
        )

    def _job_messages(self, name: str, what: str, plural: str) -> None:
        """The messages of jobs ``name`` (``Training``, ``PredictionJob``): the job as the
        REST API's job object, its result, a request naming one, a listing and an event."""
        package = f".{self.package}"
        if not any(message.name == "ProgressMessage" for message in self.file.message_type):
            self._fixed(
                "ProgressMessage",
                "A message a job reported.",
                ("time", STRING, "", False, False, "When, as DEEPaaS prints dates."),
                ("message", STRING, "", False, False, ""),
            )
        results = [
            ("output", MESSAGE, VALUE, False, False, f"What the {what} returned (JSON)."),
            ("finish_date", STRING, "", False, False, ""),
            ("duration", DOUBLE, "", False, False, f"Seconds the {what} took."),
        ]
        if name != "Training":
            results.append(("media_type", STRING, "", False, True, "A binary result's media type (GET it over REST)."))
        self._fixed(f"{name}Result", f"What a finished {what} returned.", *results)
        self._fixed(
            name,
            f"A{'n' if what[0] in 'aeiou' else ''} {what}, as the REST API's job object.",
            ("uuid", STRING, "", False, False, "32 hexadecimal digits."),
            ("date", STRING, "", False, False, "When it was created, as DEEPaaS prints dates."),
            ("status", STRING, "", False, False, "pending, running, done, error or cancelled."),
            ("args", MESSAGE, STRUCT, False, False, "Its arguments (files by their names)."),
            ("finish_date", STRING, "", False, True, "When it ended."),
            ("message", STRING, "", False, True, "Why it failed or was cancelled."),
            ("progress", DOUBLE, "", False, True, "Fraction done, 0 to 1, as the plugin reported it."),
            ("events", MESSAGE, f"{package}.ProgressMessage", True, False, "The latest messages it reported."),
            ("result", MESSAGE, f"{package}.{name}Result", False, False, "Once done."),
        )
        self._fixed(
            f"{name}Request",
            f"Names a{'n' if what[0] in 'aeiou' else ''} {what}.",
            ("uuid", STRING, "", False, False, "Its uuid."),
        )
        self._fixed(
            f"List{plural if name == 'Training' else 'PredictionJobs'}Request",
            f"Which {what}s to list.",
            ("status", STRING, "", False, True, "Only those in this status."),
            ("limit", INT64, "", False, True, f"At most this many (1 to {MAX_LIMIT})."),
            ("offset", INT64, "", False, True, "Skip this many first."),
        )
        self._fixed(
            f"List{plural if name == 'Training' else 'PredictionJobs'}Response",
            f"{what[0].upper()}{what[1:]}s, oldest first.",
            (plural.lower(), MESSAGE, f"{package}.{name}", True, False, ""),
        )
        field = "training" if name == "Training" else "prediction"
        self._fixed(
            f"{name}Event",
            f"One event of Watch{'Training' if name == 'Training' else 'Prediction'}.",
            ("event", STRING, "", False, False, f'"job" (the {what} changed) or "end" (it has ended).'),
            (field, MESSAGE, f"{package}.{name}", False, False, f'With "job": the {what}.'),
            ("status", STRING, "", False, False, 'With "end": its last status.'),
        )

    def _version_messages(self) -> None:
        package = f".{self.package}"
        self._fixed(
            "ModelVersion",
            "A model version a training made (the REST API's version object).",
            ("id", STRING, "", False, False, "name@number: callable as a model name over REST."),
            ("model", STRING, "", False, False, ""),
            ("version", INT64, "", False, False, "Its number."),
            ("parent", STRING, "", False, False, "The model trained."),
            ("training", STRING, "", False, True, "The training's uuid (its API key and admin keys only)."),
            ("arguments", MESSAGE, STRUCT, False, False, "The training's arguments (idem)."),
            ("metrics", MESSAGE, STRUCT, False, False, "The training's latest metrics."),
            ("created", STRING, "", False, False, ""),
            ("state", STRING, "", False, False, "loaded, loading, unloaded or unavailable (on this server)."),
            ("promoted", BOOL, "", False, False, "Whether the model's name serves it."),
            ("message", STRING, "", False, True, "Why it is unavailable."),
            ("mlflow_run_id", STRING, "", False, True, ""),
        )
        self._fixed("VersionRequest", "Names a version.", ("version", INT64, "", False, False, "Its number."))
        self._fixed(
            "VersionPredictRequest",
            "A prediction of a model version.",
            ("version", INT64, "", False, False, "The version's number."),
            ("arguments", MESSAGE, f"{package}.PredictRequest", False, False, "Arguments of predict()."),
        )
        self._fixed("ListVersionsRequest", "Lists the versions.")
        self._fixed(
            "ListVersionsResponse",
            "The versions, newest first.",
            ("promoted_version", STRING, "", False, True, "What the model's name serves (unset: the plugin)."),
            ("versions", MESSAGE, f"{package}.ModelVersion", True, False, ""),
        )
        self._fixed("RollbackRequest", "Undoes the latest promotion.")
        self._fixed(
            "Serving",
            "What the model's name serves.",
            ("model", STRING, "", False, False, ""),
            ("promoted_version", STRING, "", False, True, "A version id (unset: the plugin)."),
        )

    def _service(self, name: str, methods: list[str]) -> None:
        service = self.file.service.add(name=name)
        self._comment([6, 0], f"The model {self.model.name!r}.")
        for index, method in enumerate(methods):
            request, response, streaming = SIGNATURES[method]
            rpc = service.method.add(
                name=method, input_type=f".{self.package}.{request}", output_type=f".{self.package}.{response}"
            )
            if streaming:
                rpc.server_streaming = True
            self._comment([6, 0, 2, index], _METHOD_COMMENTS[method])

    # Fields of the plugin's schemas ---------------------------------------------------

    def _fields(
        self, message: _Message, schema_fields: dict[str, fields.Field], request: bool, seen: tuple[type, ...]
    ) -> None:
        for key, field in schema_fields.items():
            if field.dump_only if request else field.load_only:
                continue
            name = message.field_name(key)
            mapped = self._map(field, key, name, message, request, seen)
            if mapped.json:
                self.warnings.append(
                    f"model {self.model.name!r}: {message.proto.name}.{key} is a {type(field).__name__}, "
                    "which has no protobuf type here: it is a string holding JSON"
                )
            optional = request or not field.required or field.allow_none
            comment = _describe(field, key, name, request, mapped)
            self._add(
                message,
                name,
                mapped.type,
                type_name=mapped.type_name,
                repeated=mapped.repeated,
                optional=optional,
                comment=comment,
            )
            message.slots.append(Slot(key, name, mapped.json))
        message.proto.nested_type.extend(message.entries)
        self.slots[message.full_name] = tuple(message.slots)

    def _map(
        self, field: fields.Field, key: str, name: str, parent: _Message, request: bool, seen: tuple[type, ...]
    ) -> _Mapped:
        """The protobuf declaration of ``field`` in ``parent`` (nested messages and map
        entries are added to ``parent``)."""
        if is_file_field(field):
            return _Mapped(MESSAGE, f".{self.package}.File") if request else _Mapped(MESSAGE, VALUE)
        if isinstance(field, DelimitedFieldMixin):  # webargs: "a,b,c" in one string
            return _Mapped(STRING, comment="Items separated by commas, in one string.")
        if isinstance(field, fields.Pluck):
            return _Mapped(STRING, json=True)
        if isinstance(field, fields.Nested):
            return self._nested(field, name, parent, request, seen)
        if isinstance(field, fields.List):
            inner = self._map(field.inner, key, name, parent, request, seen)
            if inner.json:
                return _Mapped(STRING, json=True)
            if inner.repeated:  # a list of lists
                return _Mapped(MESSAGE, LIST_VALUE, repeated=True)
            if inner.map:  # a list of maps
                return _Mapped(MESSAGE, STRUCT, repeated=True)
            return dataclasses.replace(inner, repeated=True)
        if isinstance(field, fields.Tuple):
            return _Mapped(MESSAGE, LIST_VALUE)
        if isinstance(field, fields.Mapping):
            return self._mapping(field, key, name, parent, request, seen)
        scalar = _scalar(field)
        if scalar is not None:
            return _Mapped(scalar)
        if type(field) is fields.Field or isinstance(field, JSON_VALUES):
            return _Mapped(MESSAGE, VALUE)
        return _Mapped(STRING, json=True)

    def _nested(
        self, field: fields.Nested, name: str, parent: _Message, request: bool, seen: tuple[type, ...]
    ) -> _Mapped:
        try:
            schema = field.schema
        except (ValueError, TypeError, marshmallow.exceptions.RegistryError):
            return _Mapped(STRING, json=True)
        if type(schema) in seen:  # a recursive schema: its depth is unbounded
            return _Mapped(MESSAGE, STRUCT, repeated=field.many)
        nested_name = parent.nested_name(name)
        index = len(parent.proto.nested_type)
        nested = _Message(
            parent.proto.nested_type.add(name=nested_name),
            f"{parent.full_name}.{nested_name}",
            [*parent.path, 3, index],
        )
        self._fields(nested, dict(schema.fields), request, (*seen, type(schema)))
        return _Mapped(MESSAGE, f".{nested.full_name}", repeated=field.many)

    def _mapping(
        self, field: fields.Mapping, key: str, name: str, parent: _Message, request: bool, seen: tuple[type, ...]
    ) -> _Mapped:
        """``map<K, V>`` for string or integer keys and values of a scalar or message type,
        else a ``google.protobuf.Struct`` (a JSON object)."""
        key_type = STRING if field.key_field is None else _scalar(field.key_field)
        if field.value_field is None or key_type not in (STRING, INT64):
            return _Mapped(MESSAGE, STRUCT)
        value = self._map(field.value_field, key, name, parent, request, seen)
        if value.repeated or value.json:
            return _Mapped(MESSAGE, STRUCT)
        entry_name = _camel(name) + "Entry"
        entry = descriptor_pb2.DescriptorProto(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key_type, label=_OPTIONAL)
        entry.field.add(name="value", number=2, type=value.type, label=_OPTIONAL)
        if value.type_name:
            entry.field[1].type_name = value.type_name
        parent.entries.append(entry)
        return _Mapped(MESSAGE, f".{parent.full_name}.{entry_name}", repeated=True, map=True)

    def _comment(self, path: list[int], text: str) -> None:
        if text:
            lines = "".join(f" {line}\n" if line else "\n" for line in text.split("\n"))
            self.file.source_code_info.location.add(path=path, leading_comments=lines)


def _scalar(field: fields.Field) -> int | None:
    """The protobuf scalar type of ``field`` (see :data:`SCALARS`), or None."""
    if isinstance(field, fields.Enum) and field.by_value:
        return None  # its values are of the enumeration's own type
    return next((SCALARS[kind] for kind in type(field).__mro__ if kind in SCALARS), None)


def _describe(field: fields.Field, key: str, name: str, request: bool, mapped: _Mapped) -> str:
    """The comment of a field: the plugin's description, then what a client must know."""
    parts = []
    description = str(field.metadata.get("description") or "").strip()
    if description:
        parts.append(description if description.endswith(".") else description + ".")
    if key != name:
        parts.append(f"The {'argument' if request else 'key'} {key!r}.")
    if mapped.comment:
        parts.append(mapped.comment)
    if mapped.json:
        parts.append("JSON text (a " + type(field).__name__ + ": no protobuf type fits).")
    if is_file_field(field) and request:
        parts.append("A file.")
    if request:
        if field.required:
            parts.append("Required.")
        default = field.load_default
        if default is not marshmallow.missing:
            parts.append("Default: " + ("computed by the model" if callable(default) else _json(default)) + ".")
    elif field.required:
        parts.append("Always present.")
    parts += [_validator(validator) for validator in field.validators]
    return _wrap(" ".join(part for part in parts if part))


def _validator(validator: Any) -> str:
    if isinstance(validator, validate.OneOf):
        return "One of: " + ", ".join(map(str, validator.choices)) + "."
    if isinstance(validator, validate.Range):
        low = "" if validator.min is None else f"{validator.min} {'<=' if validator.min_inclusive else '<'} "
        high = "" if validator.max is None else f" {'<=' if validator.max_inclusive else '<'} {validator.max}"
        return f"Range: {low}value{high}."
    if isinstance(validator, validate.Length):
        if validator.equal is not None:
            return f"Length: {validator.equal}."
        low = "" if validator.min is None else f"{validator.min} <= "
        high = "" if validator.max is None else f" <= {validator.max}"
        return f"Length: {low}length{high}."
    if isinstance(validator, validate.Regexp):
        return f"Matches: {validator.regex.pattern!s}."
    return f"Checked by {type(validator).__name__}." if isinstance(validator, validate.Validator) else ""


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _wrap(text: str, width: int = 96) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)
