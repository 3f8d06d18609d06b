"""The server's side of a model's arguments: the marshmallow Schemas that validate requests
and the media types a model offers through its ``accept`` argument.
"""

from __future__ import annotations

import copy
from typing import Any

import marshmallow
from marshmallow import fields, validate


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


def build_schema(
    arguments: dict[str, fields.Field], name: str, base: type[marshmallow.Schema] = marshmallow.Schema
) -> type[marshmallow.Schema]:
    """A Schema class named ``name``, subclass of ``base``, whose fields are ``arguments`` (copied)."""
    return base.from_dict(copy.deepcopy(arguments), name=name)
