"""A plugin's argument fields as the worker describes them to the server.

File arguments are declared the DEEPaaS way, ``fields.Field(type="file", location="form")``
or ``fields.Raw(metadata={"type": "file"})``; they reach the plugin as :class:`UploadedFile`.
"""

from __future__ import annotations

import copy
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.model.files import UploadedFile

__all__ = ["UploadedFile", "is_file_field", "json_arguments", "schema_fields", "unbound"]


def is_file_field(field: fields.Field) -> bool:
    """True for a DEEPaaS file argument: ``type="file"`` in the field's metadata."""
    return field.metadata.get("type") == "file"


def unbound(field: fields.Field) -> fields.Field:
    """A copy of ``field`` detached from the Schema instance it was bound to.

    Plugins often return ``SomeSchema().fields``: those fields point to the plugin's Schema
    instance (``parent``, ``root``), and pickling them would make the server import the
    plugin's code to unpickle them. Container fields are detached down to their inner fields.
    """
    field = copy.copy(field)
    field.parent = field.name = field.root = None
    for attribute in ("inner", "key_field", "value_field"):
        inner = getattr(field, attribute, None)
        if isinstance(inner, fields.Field):
            setattr(field, attribute, unbound(inner))
    if isinstance(field, fields.Tuple):
        field.tuple_fields = [unbound(inner) for inner in field.tuple_fields]
    return field


def schema_fields(schema: Any) -> dict[str, fields.Field] | None:
    """Normalise a plugin's ``schema`` attribute (dict, Schema class or instance) to fields."""
    if schema is None:
        return None
    if isinstance(schema, dict):
        return {name: unbound(field) for name, field in schema.items()}
    if isinstance(schema, marshmallow.Schema) or (isinstance(schema, type) and issubclass(schema, marshmallow.Schema)):
        return {name: unbound(field) for name, field in schema._declared_fields.items()}
    raise TypeError(f"schema must be a dict of fields or a marshmallow Schema, not {type(schema).__name__}")


def json_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as stored in a training object: files become their original file name."""
    return {
        key: value.original_filename if isinstance(value, UploadedFile) else value for key, value in arguments.items()
    }
