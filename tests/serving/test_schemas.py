"""The server's argument schemas: accept choices, schemas built from a plugin's fields."""

import marshmallow
import pytest
from marshmallow import fields, validate

from deepaas_like.serving import schemas as args


def test_accept_choices_and_default():
    arguments = {
        "accept": fields.Str(load_default="image/png", validate=validate.OneOf(["application/json", "image/png"]))
    }
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


def test_integers_refuse_json_numbers_with_a_fraction():
    schema = args.build_schema({"n": fields.Int()}, "Integers", args.ArgumentsSchema)
    assert schema().load({"n": 2.0}) == {"n": 2}
    with pytest.raises(marshmallow.ValidationError, match="Not a valid integer"):
        schema().load({"n": 2.5})
    assert schema().load({"n": 3, "undeclared": "ignored"}) == {"n": 3}
