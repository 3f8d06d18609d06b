"""Plugin argument handling: uploaded files and argument schemas.

File arguments are declared the DEEPaaS way, ``fields.Field(type="file", location="form")``
or ``fields.Raw(metadata={"type": "file"})``; they reach the plugin as :class:`UploadedFile`.
"""

from __future__ import annotations

import copy
from typing import Any

import marshmallow
from marshmallow import fields, validate

from deepaas_like.model.files import UploadedFile

__all__ = ["UploadedFile", "accept_choices", "accept_default", "build_schema", "is_file_field", "json_arguments", "schema_fields"]


def is_file_field(field: fields.Field) -> bool:
    """True for a DEEPaaS file argument: ``type="file"`` in the field's metadata."""
    return field.metadata.get("type") == "file"


def accept_choices(arguments: dict[str, fields.Field]) -> list[str]:
    """Media types a model offers through its ``accept`` argument (its ``OneOf`` choices), or []."""
    field = arguments.get("accept")
    if field is None:
        return []
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            return [str(choice) for choice in validator.choices]
    return []


def accept_default(arguments: dict[str, fields.Field]) -> str | None:
    """The ``accept`` argument's default media type, if it has one."""
    field = arguments.get("accept")
    if field is None or field.load_default is marshmallow.missing:
        return None
    default = field.load_default
    return str(default() if callable(default) else default)


def _fractional(value: Any) -> bool:
    return isinstance(value, float) and not value.is_integer()


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


class ArgumentsSchema(marshmallow.Schema):
    """Base of argument schemas: arguments a model does not declare are ignored, as DEEPaaS
    ignores them (and the OpenAPI document then allows them: no ``additionalProperties: false``).

    An integer argument given a JSON number with a fraction (``2.5``) is refused: marshmallow
    would truncate it. ``2.0`` is taken as ``2``, as JSON Schema since draft 6 defines an
    integer ("a number with a zero fractional part").
    """

    class Meta:
        unknown = marshmallow.EXCLUDE

    @marshmallow.pre_load
    def _refuse_floats_for_integers(self, data: Any, **kwargs: Any) -> Any:
        errors = {
            name: ["Not a valid integer."]
            for name, field in self.fields.items()
            if isinstance(field, fields.Integer) and hasattr(data, "get") and _fractional(data.get(name))
        }
        if errors:
            raise marshmallow.ValidationError(errors)
        return data


def build_schema(arguments: dict[str, fields.Field], name: str, base: type[marshmallow.Schema] = marshmallow.Schema) -> type[marshmallow.Schema]:
    """A Schema class named ``name``, subclass of ``base``, whose fields are ``arguments`` (copied)."""
    return base.from_dict(copy.deepcopy(arguments), name=name)


def schema_fields(schema: Any) -> dict[str, fields.Field] | None:
    """Normalise a plugin's ``schema`` attribute (dict, Schema class or instance) to fields."""
    if schema is None:
        return None
    if isinstance(schema, dict):
        return {name: unbound(field) for name, field in schema.items()}
    if isinstance(schema, marshmallow.Schema) or (
        isinstance(schema, type) and issubclass(schema, marshmallow.Schema)
    ):
        return {name: unbound(field) for name, field in schema._declared_fields.items()}
    raise TypeError(f"schema must be a dict of fields or a marshmallow Schema, not {type(schema).__name__}")


def json_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as stored in a training object: files become their original file name."""
    return {
        key: value.original_filename if isinstance(value, UploadedFile) else value
        for key, value in arguments.items()
    }
