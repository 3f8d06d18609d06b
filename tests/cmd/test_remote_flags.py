"""The flags of a model's arguments read from an OpenAPI document (``deepaas-like-cli
--url``), and the values the client is given for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepaas_like.cmd.flags import DICT, LIST, VALUE, flags_from_schema, request_schema
from deepaas_like.cmd.parsing import ModelFlags, build_parser
from deepaas_like.cmd.remote import remote_arguments
from deepaas_like.exceptions import InvalidArguments

DOCUMENT = {
    "paths": {
        "/v2/models/m/predict/": {
            "post": {
                "requestBody": {
                    "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/MPredictArgs"}}}
                }
            }
        }
    },
    "components": {
        "schemas": {
            "MPredictArgs": {
                "type": "object",
                "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "sizes": {"type": "array", "items": {"type": "integer", "enum": [1, 2, 3]}},
                    "options": {"type": "object", "description": "Extra options."},
                    "ratio": {"type": "number", "default": 0.5},
                    "flip": {"type": "boolean"},
                    "mode": {"$ref": "#/components/schemas/Mode"},
                },
                "required": ["images"],
            },
            "Mode": {"type": "string", "enum": ["fast", "good"], "default": "fast"},
        }
    },
}


def test_flags_follow_the_request_body_schema_with_references():
    schema = request_schema(DOCUMENT, "/v2/models/m/predict/")
    assert schema is not None and request_schema(DOCUMENT, "/v2/models/m/train/") is None, "no train: no command"
    flags = {flag.name: flag for flag in flags_from_schema(DOCUMENT, schema)}
    assert flags["images"].shape == LIST and flags["images"].item_file and flags["images"].required
    assert flags["sizes"].choices == (1, 2, 3) and flags["sizes"].type == "integer"
    assert flags["options"].shape == DICT and flags["options"].help() == "Extra options; a JSON object"
    assert flags["mode"].shape == VALUE and flags["mode"].help() == "one of: fast, good; default: fast"
    assert flags["ratio"].type == "number" and not flags["flip"].required
    assert ModelFlags.of_document(DOCUMENT, "m@3").predict is not None, "a version takes its model's arguments"


def test_values_are_typed_and_files_checked(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    flags = ModelFlags.of_document(DOCUMENT, "m")
    assert flags.predict is not None
    parser = build_parser(flags)
    argv = ["predict", "--images", str(image), "--sizes", "2", "--ratio", "0.25", "--flip", "false"]
    options = parser.parse_args([*argv, "--options", '{"a": 1}', "--mode", "good"])
    assert remote_arguments(flags.predict, options) == {
        "images": [Path(image)],
        "sizes": [2],
        "options": {"a": 1},
        "ratio": 0.25,
        "flip": False,
        "mode": "good",
    }
    unparsed = parser.parse_args(["predict", "--images", str(image), "--ratio", "half"])
    assert remote_arguments(flags.predict, unparsed)["ratio"] == "half", "the server names it in its 422"
    with pytest.raises(InvalidArguments) as missing:
        remote_arguments(flags.predict, parser.parse_args(["predict", "--images", str(tmp_path / "no.png")]))
    assert list(missing.value.messages) == ["images"]
    with pytest.raises(InvalidArguments) as bad_json:
        remote_arguments(flags.predict, parser.parse_args(["predict", "--images", str(image), "--options", "{"]))
    assert list(bad_json.value.messages) == ["options"]
