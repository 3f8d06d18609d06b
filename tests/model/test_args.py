"""Argument helpers beside the plugin: file fields, fields from a plugin's schema, the
arguments a job shows."""

import datetime

import marshmallow
import pytest
from marshmallow import fields, validate

from deepaas_like.exceptions import PluginDeclarationError
from deepaas_like.model import args


def test_file_fields_in_both_deepaas_spellings():
    assert args.is_file_field(fields.Field(type="file", location="form"))
    assert args.is_file_field(fields.Raw(metadata={"type": "file"}))
    assert not args.is_file_field(fields.Str())


def test_schema_fields_accepts_dict_class_and_instance():
    class Response(marshmallow.Schema):
        value = fields.Int()

    assert list(args.schema_fields(Response)) == ["value"]
    assert list(args.schema_fields(Response())) == ["value"]
    assert list(args.schema_fields({"v": fields.Str()})) == ["v"]
    assert args.schema_fields(None) is None
    with pytest.raises(TypeError):
        args.schema_fields(42)


def test_json_arguments_replace_files_by_their_name():
    upload = args.UploadedFile("data", "/tmp/x", "text/csv", "train.csv")
    assert args.json_arguments({"data": upload, "epochs": 2}) == {"data": "train.csv", "epochs": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float, "gives 'factor' as the Python type float, where a marshmallow field is expected, e.g. fields.Float()"),
        (10, "gives 'factor' as the value 10, where a marshmallow field is expected, e.g. fields.Int(load_default=10)"),
        (fields.Int, "gives 'factor' as the class fields.Integer, where a marshmallow field is expected"),
        (fields.Int(load_default="five"), "gives 'factor' a load_default of 'five', which fields.Integer cannot read"),
    ],
)
def test_an_argument_that_is_not_a_usable_field_is_named(value, expected):
    with pytest.raises(PluginDeclarationError) as raised:
        args.checked_fields({"ok": fields.Str(), "factor": value}, "get_predict_args() of model 'm'")
    assert raised.value.message.startswith(f"get_predict_args() of model 'm' {expected}")


class Required(marshmallow.Schema):
    name = fields.Str(required=True)


def test_defaults_a_field_reads_are_kept():
    declared = {
        "when": fields.DateTime(load_default=datetime.datetime(2024, 1, 2)),  # loaded values, not text
        "count": fields.Int(load_default=5),
        "ratio": fields.Float(load_default=1),
        "labels": fields.List(fields.Str(), load_default=["a"]),
        "choice": fields.Str(load_default="none", validate=validate.OneOf(["a"])),  # validators: not run
        "image": fields.Raw(metadata={"type": "file"}, load_default=None),
        "factory": fields.Dict(load_default=dict),
        "nested": fields.Nested(Required, load_default={}),  # a nested load is more than a type check
    }
    assert list(args.checked_fields(declared, "get_train_args() of model 'm'")) == list(declared)
    with pytest.raises(PluginDeclarationError, match=r"the schema attribute gives 'score' as the Python type float"):
        args.schema_fields({"score": float})
