"""The command-line flags of a plugin's arguments, one per argument, whichever side
describes them: the plugin's marshmallow fields (``deepaas-like-cli`` running the plugin
in this process) or a server's OpenAPI document (``deepaas-like-cli --url``), so that a
model's ``predict --help`` reads the same both ways.

A flag is ``--NAME`` (``dest`` ``arg:NAME``); list arguments take the flag repeated or a
JSON list (DEEPaaS's syntax), dict arguments a JSON object, file arguments a path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.exceptions import InvalidArguments
from deepaas_like.model import args as model_args

__all__ = [
    "DEST_PREFIX",
    "Flag",
    "add_flags",
    "flag_values",
    "flags_from_fields",
    "flags_from_schema",
    "json_value",
    "request_schema",
]

#: Flags of a plugin's arguments are stored under ``arg:NAME`` (never a CLI option's dest).
DEST_PREFIX = "arg:"

FILE, LIST, DICT, VALUE = "file", "list", "dict", "value"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One argument of a plugin as a flag. ``shape`` is ``file`` (a path), ``list`` (the
    flag repeated, or a JSON list), ``dict`` (a JSON object) or ``value``; ``type`` the JSON
    type of a value or of a list's items (``integer``, ``number``, ``boolean``, ``string``;
    None: any); ``item_file`` that a list holds files. ``default`` is shown in the help
    (None: no default to show).
    """

    name: str
    required: bool = False
    description: str = ""
    choices: tuple[Any, ...] | None = None
    default: Any = None
    shape: str = VALUE
    type: str | None = None
    item_file: bool = False

    def help(self) -> str:
        """The flag's help: description, choices, default, and how to write the value."""
        parts = [self.description.rstrip(".")]
        if self.choices:
            parts.append(f"one of: {', '.join(map(str, self.choices))}")
        if self.default is not None:
            parts.append(f"default: {self.default}")
        hint = {FILE: "a path to a file", LIST: "repeat the flag, or give a JSON list", DICT: "a JSON object"}
        parts.append(hint.get(self.shape, ""))
        return "; ".join(part for part in parts if part).replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag], server_supplied: set[str]) -> None:
    """Add one ``--NAME`` per flag to ``parser``; an argument in ``server_supplied`` (a
    prediction's ``accept``, chosen by the server when absent) is never required.
    """
    for flag in flags:
        parser.add_argument(
            f"--{flag.name}",
            dest=f"{DEST_PREFIX}{flag.name}",
            action="append" if flag.shape == LIST else "store",
            required=flag.required and flag.name not in server_supplied,
            help=flag.help(),
            metavar=flag.name.upper(),
        )


# From a plugin's marshmallow fields -------------------------------------------------------


def flags_from_fields(arguments: Mapping[str, fields.Field]) -> list[Flag]:
    """The flags of a plugin's arguments as its ``get_*_args()`` declares them."""
    return [_flag_of_field(name, field) for name, field in arguments.items()]


def _flag_of_field(name: str, field: fields.Field) -> Flag:
    choices = next((v.choices for v in field.validators if isinstance(v, marshmallow.validate.OneOf)), None)
    default = field.load_default
    shown = None if default is marshmallow.missing or callable(default) else default
    if model_args.is_file_field(field):
        shape = FILE
    elif isinstance(field, fields.List):
        shape = LIST
    elif isinstance(field, fields.Dict):
        shape = DICT
    else:
        shape = VALUE
    return Flag(
        name,
        required=field.required,
        description=str(field.metadata.get("description", "")),
        choices=tuple(choices) if choices else None,
        default=shown,
        shape=shape,
    )


# From a server's OpenAPI document -----------------------------------------------------------


def request_schema(document: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The JSON schema of the request body of ``POST path`` in an OpenAPI ``document`` (its
    ``multipart/form-data`` schema, else its first), references resolved; None when the
    document has no such operation (the server does not offer it).
    """
    operation = document.get("paths", {}).get(path, {}).get("post")
    if operation is None:
        return None
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return {"type": "object", "properties": {}}
    chosen = content.get("multipart/form-data") or next(iter(content.values()))
    return _resolved(document, chosen.get("schema", {}))


def _resolved(document: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` (``#/components/schemas/Name``) replaced by what it names."""
    seen = 0
    while "$ref" in schema and seen < 16:  # a document's references are few; never loop forever
        target: Any = document
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema, seen = target, seen + 1
    return dict(schema)


def flags_from_schema(document: Mapping[str, Any], schema: Mapping[str, Any]) -> list[Flag]:
    """The flags of the properties of a request body's JSON ``schema`` (from ``document``):
    ``format: binary`` is a file, ``array`` a list, ``object`` a dict; ``enum``, ``default``
    and ``required`` as the server declares them.
    """
    required = set(schema.get("required", ()))
    flags = []
    for name, declared in schema.get("properties", {}).items():
        prop = _resolved(document, declared)
        items = _resolved(document, prop.get("items", {})) if prop.get("type") == "array" else {}
        shape = _shape(prop)
        typed = items if shape == LIST else prop
        enum = prop.get("enum") or items.get("enum")
        flags.append(
            Flag(
                name,
                required=name in required,
                description=str(prop.get("description", "")),
                choices=tuple(enum) if enum else None,
                default=prop.get("default"),
                shape=shape,
                type=typed.get("type") if isinstance(typed.get("type"), str) else None,
                item_file=items.get("format") == "binary",
            )
        )
    return flags


def _shape(prop: Mapping[str, Any]) -> str:
    if prop.get("format") == "binary":
        return FILE
    return {"array": LIST, "object": DICT}.get(str(prop.get("type")), VALUE)


# The values given ------------------------------------------------------------------------


def json_value(name: str, value: str) -> Any:
    """``value`` parsed as JSON; raises ``InvalidArguments`` naming argument ``name``."""
    try:
        return json.loads(value)
    except ValueError as error:
        raise InvalidArguments({name: [f"not valid JSON: {error}"]}) from None


def flag_values(flags: Iterable[Flag], namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags given (as strings), with JSON lists and objects decoded (DEEPaaS's CLI
    syntax): ``--labels '["cat", "dog"]'`` is the list, as ``--labels cat --labels dog``.
    Raises ``InvalidArguments`` for JSON that does not parse.
    """
    shapes = {flag.name: flag.shape for flag in flags}
    given = vars(namespace)
    raw = {}
    for name, shape in shapes.items():
        value = given.get(f"{DEST_PREFIX}{name}")
        if value is None:
            continue
        if shape == LIST and len(value) == 1 and value[0].lstrip().startswith("["):
            value = json_value(name, value[0])
        elif shape == DICT:
            value = json_value(name, value)
        raw[name] = value
    return raw
