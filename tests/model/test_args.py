"""Argument helpers beside the plugin: file fields, fields from a plugin's schema, the
arguments a job shows."""

import marshmallow
import pytest
from marshmallow import fields

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
