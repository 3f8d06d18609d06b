"""``deepaas-like-cli``: call one model in-process, without a server.

``deepaas-like-cli --model-name demo predict --image cat.png --size 32 --output out.png``;
subcommands ``metadata``, ``predict``, ``train``, ``openapi``. Flags of ``predict`` and
``train`` are generated from the plugin's arguments; file arguments take a path.
JSON goes to stdout, media to ``--output FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import shutil
import sys
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like import config
from deepaas_like.api import openapi
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments
from deepaas_like.model import args as model_args
from deepaas_like.model.loading import DEFAULT_NAMESPACE, resolve_model_names
from deepaas_like.model.plugin import FileResult
from deepaas_like.model.wrapper import ModelWrapper
from deepaas_like.settings import Settings
from deepaas_like.workers.inprocess import InProcessPool


def _base_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepaas-like-cli", description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--model-name", default=None, help=f"model to call (default: ${config.MODEL_ENV}, or the only one installed)")
    parser.add_argument("--model-namespace", default=DEFAULT_NAMESPACE, help="entry-point group of plugins")
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="do not call warm() first")
    return parser


def _help(field: fields.Field) -> str:
    parts = [str(field.metadata.get("description", "")).rstrip(".")]
    choices = next((v.choices for v in field.validators if isinstance(v, marshmallow.validate.OneOf)), None)
    if choices:
        parts.append(f"one of: {', '.join(map(str, choices))}")
    if field.load_default is not marshmallow.missing and not callable(field.load_default):
        parts.append(f"default: {field.load_default}")
    if field.required:
        parts.append("required")
    if model_args.is_file_field(field):
        parts.append("a path to a file")
    return "; ".join(part for part in parts if part)


def _add_argument_flags(parser: argparse.ArgumentParser, arguments: dict[str, fields.Field]) -> None:
    for name, field in arguments.items():
        multiple = isinstance(field, fields.List)
        parser.add_argument(
            f"--{name}", dest=f"arg:{name}", action="append" if multiple else "store", help=_help(field), metavar=name.upper()
        )


def build_parser(model: ModelWrapper) -> argparse.ArgumentParser:
    """The full parser once ``model``'s description is known."""
    parser = _base_parser()
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("metadata", help="print the model's metadata (JSON)")
    commands.add_parser("openapi", help="print the OpenAPI document of the model's routes (JSON)")
    for hook, arguments in (("predict", model.description.predict_args), ("train", model.description.train_args)):
        if arguments is None:
            continue
        command = commands.add_parser(hook, help=f"run {hook}() with these arguments")
        _add_argument_flags(command, arguments)
        if hook == "predict":
            command.add_argument("--output", help="write the prediction to this file (required for non-JSON media)")
    return parser


def _uploaded(name: str, path: str) -> model_args.UploadedFile:
    if not os.path.isfile(path):
        raise InvalidArguments({name: [f"no such file: {path}"]})
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return model_args.UploadedFile(name, os.path.abspath(path), content_type, os.path.basename(path))


def load_arguments(schema: type[marshmallow.Schema], namespace: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags given against ``schema`` as the server validates a request."""
    instance = schema()
    raw = {key[4:]: value for key, value in vars(namespace).items() if key.startswith("arg:") and value is not None}
    for name, value in raw.items():
        if model_args.is_file_field(instance.fields[name]):
            raw[name] = _uploaded(name, value)
    try:
        return instance.load(raw)
    except marshmallow.ValidationError as error:
        raise InvalidArguments(error.normalized_messages()) from error


async def run(argv: list[str]) -> int:
    first, _ = _base_parser(add_help=False).parse_known_args(argv)
    names = list(config.model_names([first.model_name] if first.model_name else []))
    name = resolve_model_names(names, first.model_namespace)
    if len(name) != 1:
        raise DeepaasLikeError(f"choose one model with --model-name: {', '.join(name)}")
    pool = InProcessPool(name[0], first.model_namespace, warm=first.warm)
    model = ModelWrapper(name[0], pool, lambda: pool)
    await model.start()
    options = build_parser(model).parse_args(argv)
    if options.command == "metadata":
        return _print(model.metadata())
    if options.command == "openapi":
        api_spec = openapi.AiohttpApiSpec(url="", title="deepaas_like", version="cli", openapi_version=openapi.OpenApiVersion.V303)
        api_spec.spec.plugins[0].converter.add_attribute_function(openapi.file_field_property)
        openapi.add_model_paths(api_spec.spec, Settings(database_url=""), model)
        return _print(api_spec.swagger_dict())
    if options.command == "train":
        kwargs = load_arguments(model.train_schema, options)
        return _print({"status": "done", "args": model_args.json_arguments(kwargs), "result": {"output": await model.train(kwargs, job_id="cli")}})
    kwargs = load_arguments(model.predict_schema, options)
    if model.accept_choices and "accept" not in kwargs:
        kwargs["accept"] = model.accept_default or model.accept_choices[0]
    result = await model.predict(kwargs)
    if isinstance(result, (bytes, FileResult)):
        if not options.output:
            raise DeepaasLikeError("the prediction is binary: give --output FILE")
        if isinstance(result, FileResult):
            shutil.copyfile(result.path, options.output)
        else:
            with open(options.output, "wb") as handle:
                handle.write(result)
        return _print({"status": "OK", "output": options.output, "bytes": os.path.getsize(options.output)})
    body = result if model.response_schema is not None else {"status": "OK", "predictions": result}
    if options.output:
        with open(options.output, "w") as handle:
            json.dump(body, handle)
    return _print(body)


def _print(document: Any) -> int:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 0, 2 for invalid arguments, 1 for other errors."""
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except InvalidArguments as error:
        json.dump(error.messages, sys.stderr)
        sys.stderr.write("\n")
        return 2
    except DeepaasLikeError as error:
        print(f"deepaas-like-cli: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
