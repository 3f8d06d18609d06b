"""One model's messages as Python values: a request's fields as the arguments the plugin's
schema validates (uploaded files written to the request's upload folder, as over HTTP), and
predictions and trainings as response messages.
"""

from __future__ import annotations

import json
import mimetypes
import os
from typing import Any, cast

from google.protobuf import descriptor_pool, json_format, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from deepaas_like import json_text
from deepaas_like.exceptions import InvalidArguments, InvalidPrediction
from deepaas_like.media import OCTET_STREAM, sniff
from deepaas_like.model.args import UploadedFile
from deepaas_like.protos.model_protos import JSON_TYPES, ModelProtos, Slot
from deepaas_like.results import Prediction
from deepaas_like.serving.uploads import Uploads

__all__ = ["Messages", "NOT_FINITE", "new_pool"]

_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_INT64 = FieldDescriptor.TYPE_INT64


def new_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding what model files import (``google/protobuf/struct.proto``)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    return pool


class Messages:
    """The message classes of one model's file, added to ``pool``, and the conversions.

    Raises ``TypeError`` when the pool refuses the file (a bug of the builder, never of a plugin).
    """

    def __init__(self, protos: ModelProtos, pool: descriptor_pool.DescriptorPool) -> None:
        self.protos = protos
        pool.AddSerializedFile(protos.file.SerializeToString())
        self._pool = pool
        self._file_type = f"{protos.package}.File"

    def of(self, name: str) -> type[Message]:
        """The class of message ``name`` (``PredictRequest``, ``Training``, ...)."""
        return message_factory.GetMessageClass(self._pool.FindMessageTypeByName(f"{self.protos.package}.{name}"))

    # Requests ---------------------------------------------------------------------------

    def arguments(self, request: Message, uploads: Uploads) -> dict[str, Any]:
        """The arguments a request sets (unset fields are left out, so that the schema's
        defaults apply); ``File`` fields become :class:`UploadedFile` in ``uploads``.
        Raises :class:`InvalidArguments` naming the field (``{"a": {"b": [...]}}`` inside a
        nested message) for a JSON-text field that is not JSON, and for NaN or Infinity in
        JSON data, which JSON has not (the HTTP front refuses them too).
        """
        values: dict[str, Any] = {}
        for slot, field in self._fields(request):
            value = getattr(request, slot.name)
            if field.is_repeated:
                if not value:
                    continue  # an empty list is no list: proto3 cannot tell them apart
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    entry = field.message_type.fields_by_name["value"]
                    values[slot.key] = {k: self._argument(slot, entry, v, uploads, k) for k, v in value.items()}
                else:
                    values[slot.key] = [
                        self._argument(slot, field, item, uploads, index) for index, item in enumerate(value)
                    ]
            elif request.HasField(slot.name):
                values[slot.key] = self._argument(slot, field, value, uploads)
        return values

    def _argument(
        self, slot: Slot, field: FieldDescriptor, value: Any, uploads: Uploads, item: int | str | None = None
    ) -> Any:
        """One value of ``slot`` (``item``: its index or key in a repeated field or a map);
        its errors are named as marshmallow names fields: ``{"a": {0: {"b": [...]}}}``."""
        try:
            return self._value(slot, field, value, uploads)
        except _BadValue as error:
            messages: Any = [str(error)]
        except InvalidArguments as error:  # in a nested message: its fields
            messages = error.messages
        raise InvalidArguments({slot.key: messages if item is None else {item: messages}})

    def _value(self, slot: Slot, field: FieldDescriptor, value: Any, uploads: Uploads) -> Any:
        if slot.json:
            try:
                return json.loads(value, parse_constant=_not_json_number)
            except ValueError as error:
                raise _BadValue(f"not valid JSON: {error}") from None
        if field.message_type is None:
            return value
        name = field.message_type.full_name
        if name == self._file_type:
            return _upload(slot.key, value, uploads)
        if name in JSON_TYPES:
            try:
                return json_format.MessageToDict(value)
            except ValueError:  # protobuf's JSON mapping of a Value refuses NaN and Infinity
                raise _BadValue(NOT_FINITE) from None
        return self.arguments(value, uploads)

    # Responses --------------------------------------------------------------------------

    def predict_response(self, prediction: Prediction, data: bytes | None) -> Message:
        """``PredictResponse`` of a prediction: its ``data`` (binary, in its media type) as a
        ``File``, else its JSON document as a ``Prediction``. Raises
        :class:`InvalidPrediction` naming the key whose value the message cannot hold.
        """
        response: Any = self.of("PredictResponse")()  # a class made at run time: its fields are not typed
        if data is not None:
            response.file.content = data
            response.file.content_type = prediction.media_type
            return response
        if not isinstance(prediction.document, dict):
            raise InvalidPrediction({"": ["the prediction is not a JSON object, as the model's schema says"]})
        response.prediction.SetInParent()
        self._fill(response.prediction, prediction.document)
        return response

    def job(self, document: dict[str, Any], name: str = "Training") -> Message:
        """Message ``name`` of a REST API document: a ``Training`` or ``PredictionJob`` of
        the REST API's job object, a ``ModelVersion``... (keys the message lacks are
        skipped; ``result.duration`` is in seconds, the REST object's
        ``result.duration_seconds``). NaN and Infinity (a plugin's result or progress) are sent
        as null, as the HTTP front sends them: unset ``progress``, ``null_value`` in ``args``
        and ``result``; protobuf's JSON mapping, which clients such as grpcurl print answers
        with, has no NaN in a ``Value``, and ``ParseDict`` refuses one in a ``double``.
        """
        result = document.get("result")
        if result is not None:
            document = {**document, "result": {**result, "duration": result.get("duration_seconds")}}
        return json_format.ParseDict(json_text.finite(document), self.of(name)(), ignore_unknown_fields=True)

    def _fill(self, message: Message, values: dict[str, Any]) -> None:
        for slot, field in self._fields(message):
            value = values.get(slot.key)
            if value is None:
                continue
            try:
                if slot.json:
                    setattr(message, slot.name, json.dumps(value))
                elif field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
                    entries, entry = getattr(message, slot.name), field.message_type.fields_by_name["value"]
                    for key, item in value.items():
                        if entry.type == _MESSAGE:
                            self._set(entries[key], entry, item)
                        else:
                            entries[key] = _scalar(entry, item)
                elif field.is_repeated:
                    items = getattr(message, slot.name)
                    for item in value:
                        if field.type == _MESSAGE:
                            self._set(items.add(), field, item)
                        else:
                            items.append(_scalar(field, item))
                elif field.type == _MESSAGE:
                    self._set(getattr(message, slot.name), field, value)
                else:
                    setattr(message, slot.name, _scalar(field, value))
            except (TypeError, ValueError, AttributeError, json_format.ParseError) as error:
                raise InvalidPrediction({slot.key: [f"cannot be sent over gRPC: {error}"]}) from None

    def _set(self, target: Message, field: FieldDescriptor, value: Any) -> None:
        target.SetInParent()
        if field.message_type is not None and field.message_type.full_name in JSON_TYPES:
            _json_value(target, value)
        else:
            self._fill(target, value)

    def _fields(self, message: Message) -> list[tuple[Slot, FieldDescriptor]]:
        """The generated fields of ``message`` with their descriptors."""
        descriptor = message.DESCRIPTOR
        slots = self.protos.slots[descriptor.full_name]
        # upb's descriptors are typed apart from the Python ones, with the same interface.
        return [(slot, cast(FieldDescriptor, descriptor.fields_by_name[slot.name])) for slot in slots]


class _BadValue(Exception):
    """A request's value that its field cannot take (the message says why)."""


#: Why a JSON value holding NaN or Infinity is refused (JSON has no such numbers).
NOT_FINITE = "NaN and Infinity are not JSON numbers"


def _not_json_number(constant: str) -> Any:
    """``json.loads``'s hook for ``NaN``, ``Infinity`` and ``-Infinity``: Python's parser takes
    them, JSON (RFC 8259, section 6) has no such numbers."""
    raise ValueError(f"{constant} is not a JSON number")


def _json_value(target: Any, value: Any) -> None:
    """Fill a ``Struct``, ``ListValue`` or ``Value`` with JSON data, by protobuf's own helpers
    for them (``json_format.ParseDict`` takes three times as long on a list of floats)."""
    name = target.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        target.update(value)
    elif name == "google.protobuf.ListValue":
        target.extend(value)
    elif isinstance(value, dict):
        target.struct_value.update(value)
    elif isinstance(value, (list, tuple)):
        target.list_value.extend(value)
    else:
        json_format.ParseDict(value, target)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (as marshmallow's Int takes it).
    if field.type == _INT64 and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _upload(key: str, file: Any, uploads: Uploads) -> UploadedFile:
    """A ``File`` message written to the request's upload folder, as the plugin receives an
    upload over HTTP; without a media type, the one its bytes show, and without a name, the
    argument's name with the media type's extension.
    """
    content_type = file.content_type or sniff(file.content) or OCTET_STREAM
    filename = os.path.basename(file.filename) or key + (mimetypes.guess_extension(content_type) or "")
    path = uploads.new_path(filename)
    with open(path, "wb") as handle:
        handle.write(file.content)
    return UploadedFile(key, path, content_type, filename)
