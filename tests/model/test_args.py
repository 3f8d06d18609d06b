"""Argument helpers: file fields, accept choices, schemas built from a plugin's fields."""

import marshmallow
import pytest
from marshmallow import fields, validate

from deepaas_like.model import args


def test_file_fields_in_both_deepaas_spellings():
    assert args.is_file_field(fields.Field(type="file", location="form"))
    assert args.is_file_field(fields.Raw(metadata={"type": "file"}))
    assert not args.is_file_field(fields.Str())


def test_accept_choices_and_default():
    arguments = {"accept": fields.Str(load_default="image/png", validate=validate.OneOf(["application/json", "image/png"]))}
    assert args.accept_choices(arguments) == ["application/json", "image/png"]
    assert args.accept_default(arguments) == "image/png"
    assert args.accept_choices({"x": fields.Int()}) == [] and args.accept_default({}) is None


def test_build_schema_copies_fields_and_keeps_marshmallow3_idioms():
    shared = fields.Int(missing=3, description="old-style")
    schema = args.build_schema({"n": shared}, "Example")
    assert schema.__name__ == "Example"
    assert schema().load({}) == {"n": 3}
    assert schema().fields["n"] is not shared
    with pytest.raises(marshmallow.ValidationError):
        schema().load({"n": "x"})


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
