"""A plugin's argument fields as the worker describes them to the server.

File arguments are declared the DEEPaaS way, ``fields.Field(type="file", location="form")``
or ``fields.Raw(metadata={"type": "file"})``; they reach the plugin as :class:`UploadedFile`.
"""

from __future__ import annotations

import copy
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.exceptions import PluginDeclarationError
from deepaas_like.model.files import UploadedFile

__all__ = ["UploadedFile", "checked_fields", "is_file_field", "json_arguments", "schema_fields", "unbound"]

#: The field to suggest for a Python type given where a marshmallow field is expected.
_FIELD_FOR_TYPE = {
    bool: "fields.Bool()",
    int: "fields.Int()",
    float: "fields.Float()",
    str: "fields.Str()",
    list: "fields.List(fields.Str())",
    dict: "fields.Dict()",
}


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


def checked_fields(arguments: Any, where: str) -> dict[str, fields.Field]:
    """``arguments`` (what a plugin declares: ``{name: marshmallow field}``) detached by
    :func:`unbound`, once each is checked to be a field instance whose ``load_default`` the
    field itself can read. ``where`` names the declaration ("get_predict_args() of model 'x'").

    Raises :class:`PluginDeclarationError` naming the declaration and the argument: a Python
    type (``float``), a value or a field class where a field is expected, or a default of
    the wrong type (``fields.Int(load_default="five")``), which would otherwise reach the
    plugin as given and break the OpenAPI document.
    """
    if not isinstance(arguments, dict):
        raise PluginDeclarationError(
            f"{where} gives {type(arguments).__name__}, where a dict of marshmallow fields is expected"
        )
    checked = {}
    for name, field in arguments.items():
        if not isinstance(field, fields.Field):
            raise PluginDeclarationError(f"{where} gives {name!r} as {_not_a_field(field)}")
        problem = _unreadable_default(field)
        if problem is not None:
            raise PluginDeclarationError(
                f"{where} gives {name!r} a load_default of {field.load_default!r}, which "
                f"fields.{type(field).__name__} cannot read ({problem}): give a default of the field's type"
            )
        checked[name] = unbound(field)
    return checked


def _not_a_field(value: Any) -> str:
    if isinstance(value, type) and issubclass(value, fields.Field):
        name = value.__name__
        return f"the class fields.{name}, where a marshmallow field is expected: write fields.{name}()"
    if isinstance(value, type):
        example = _FIELD_FOR_TYPE.get(value, "fields.Raw()")
        return f"the Python type {value.__name__}, where a marshmallow field is expected, e.g. {example}"
    example = _FIELD_FOR_TYPE.get(type(value), "fields.Raw()").replace("()", f"(load_default={value!r})", 1)
    return f"the value {value!r}, where a marshmallow field is expected, e.g. {example}"


#: Fields whose reading of a value runs more than a type check: a nested Schema's whole
#: load (its required fields), or the plugin's own functions. Their defaults are not checked.
_UNCHECKED_DEFAULTS = (fields.Nested, fields.Method, fields.Function)


def _unreadable_default(field: fields.Field) -> str | None:
    """Why ``field`` cannot read its own ``load_default`` (None if it can, or has none).

    A default is the loaded value (a ``datetime`` for ``DateTime``): it is read as given or
    as serialised, as apispec serialises it for the OpenAPI document. Validators are not
    run: a default outside the choices may be a plugin's "not given".
    """
    default = field.load_default
    if default is marshmallow.missing or default is None or callable(default):
        return None
    if isinstance(field, _UNCHECKED_DEFAULTS):
        return None
    problems = []
    for form in (lambda: default, lambda: field._serialize(default, None, None)):
        try:
            field._deserialize(form(), None, None)
            return None
        except marshmallow.ValidationError as error:
            messages = error.messages
            problems.append(" ".join(map(str, messages)) if isinstance(messages, list) else str(messages))
        except Exception as error:  # noqa: BLE001 - whatever the field raises, it cannot read it
            problems.append(f"{type(error).__name__}: {error}")
    return problems[0]


def schema_fields(schema: Any, where: str = "the schema attribute") -> dict[str, fields.Field] | None:
    """Normalise a plugin's ``schema`` attribute (dict, Schema class or instance) to fields;
    a dict is checked as :func:`checked_fields` checks arguments (``where`` names it).
    """
    if schema is None:
        return None
    if isinstance(schema, dict):
        return checked_fields(schema, where)
    if isinstance(schema, marshmallow.Schema) or (isinstance(schema, type) and issubclass(schema, marshmallow.Schema)):
        return {name: unbound(field) for name, field in schema._declared_fields.items()}
    raise TypeError(f"schema must be a dict of fields or a marshmallow Schema, not {type(schema).__name__}")


def json_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as stored in a training object: files become their original file name."""
    return {
        key: value.original_filename if isinstance(value, UploadedFile) else value for key, value in arguments.items()
    }
