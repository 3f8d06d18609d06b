"""The server's side of a model's arguments: the marshmallow Schemas that validate requests
(of every front: HTTP, gRPC, the CLI), the media types a model offers through its
``accept`` argument, and the arguments of job listings.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any

import marshmallow
from marshmallow import fields, validate

from deepaas_like.exceptions import HookNotImplemented, InvalidArguments
from deepaas_like.jobs.states import OLDEST_FIRST, ORDERS, STATES
from deepaas_like.kinds import PREDICT, Kind
from deepaas_like.model.plugin import ModelDescription

__all__ = [
    "MAX_LIMIT",
    "MAX_OFFSET",
    "ArgumentsSchema",
    "ListingArgs",
    "ModelSchemas",
    "accept_choices",
    "accept_default",
    "build_schema",
    "camel_case",
    "instance",
    "load",
]


def camel_case(name: str) -> str:
    """``name`` (a model's entry-point name) as a CamelCase identifier part: ``text_classifier``
    -> ``TextClassifier``; schema and service names are built from it.
    """
    return "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", name) if part)


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


@functools.lru_cache(maxsize=256)
def instance(schema: type[marshmallow.Schema]) -> marshmallow.Schema:
    """The one instance of ``schema`` that validates every request (building a Schema copies
    its fields).
    """
    return schema()


def load(schema: type[marshmallow.Schema], raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` arguments validated and loaded by ``schema``; raises :class:`InvalidArguments`
    with ``{"field": ["message", ...]}``.
    """
    try:
        return instance(schema).load(raw)
    except marshmallow.ValidationError as error:
        raise InvalidArguments(error.normalized_messages()) from None


MAX_OFFSET = 2**63 - 1  # the largest a database's 64-bit integer holds
MAX_LIMIT = 10_000  # jobs in one listing


class ListingArgs(marshmallow.Schema):
    """Arguments of job listings: filter by ``status``, sort by creation in ``order``
    (``asc``, oldest first, as DEEPaaS lists trainings; ``desc``, newest first), page with
    ``limit``/``offset`` (counted in that order).
    """

    status = fields.Str(validate=validate.OneOf([str(status) for status in STATES]))
    order = fields.Str(load_default=OLDEST_FIRST, validate=validate.OneOf(ORDERS))
    limit = fields.Int(validate=validate.Range(min=1, max=MAX_LIMIT))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


@dataclasses.dataclass(frozen=True)
class ModelSchemas:
    """A model's description as every front reads it, apart from its workers: the plugin's
    ``description``, the Schemas of its ``predict`` and ``train`` arguments (None: no such
    hook) and of its ``response`` (None: DEEPaaS's wrapping), and the media types its
    ``accept`` argument offers (``accept_choices``, in the plugin's order; may be empty)
    with their ``accept_default``. Built once per model; its versions share it.
    """

    name: str
    description: ModelDescription
    predict: type[marshmallow.Schema] | None
    train: type[marshmallow.Schema] | None
    response: type[marshmallow.Schema] | None
    accept_choices: list[str]
    accept_default: str | None

    @classmethod
    def build(cls, name: str, description: ModelDescription, trains: bool = True) -> ModelSchemas:
        """The schemas of model ``name`` from its plugin's ``description``; ``trains=False``
        leaves ``train`` out (a model served for predictions only).
        """
        prefix = camel_case(name)
        predict = train = response = None
        choices: list[str] = []
        default = None
        if description.predict_args is not None:
            predict = build_schema(description.predict_args, f"{prefix}PredictArgs", ArgumentsSchema)
            choices = accept_choices(description.predict_args)
            default = accept_default(description.predict_args)
            if choices:
                # The server always supplies ``accept`` (negotiated from the Accept header
                # when the client does not send it), as DEEPaaS reads it from that header.
                predict._declared_fields["accept"].required = False
        if description.train_args is not None and trains:
            train = build_schema(description.train_args, f"{prefix}TrainArgs", ArgumentsSchema)
        if description.response_fields is not None:
            response = build_schema(description.response_fields, f"{prefix}Response")
        return cls(name, description, predict, train, response, choices, default)

    @property
    def default_accept(self) -> str | None:
        """The media type of a prediction whose client names none: the ``accept`` argument's
        default when it is among the choices, else the first choice; None when the model
        offers none (it answers JSON).
        """
        if not self.accept_choices:
            return None
        return self.accept_default if self.accept_default in self.accept_choices else self.accept_choices[0]

    def of(self, kind: Kind | str) -> type[marshmallow.Schema] | None:
        """The argument Schema of ``kind`` (None: the plugin lacks the hook)."""
        return self.predict if kind == PREDICT else self.train

    def require(self, kind: Kind | str) -> type[marshmallow.Schema]:
        """The argument Schema of ``kind``; raises ``HookNotImplemented`` (501) without the hook."""
        schema = self.of(kind)
        if schema is None:
            raise HookNotImplemented(f"model {self.name!r} does not implement {kind}()")
        return schema
