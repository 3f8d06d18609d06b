"""``deepaas-like-cli``: call one model in-process, without a server; install plugins.

``deepaas-like-cli --model-name demo predict --image cat.png --size 32 --output out.png``;
subcommands ``metadata``, ``predict``, ``train``, ``openapi``, ``protos`` (the gRPC
service's ``.proto`` file) and ``install``. Flags of
``predict`` and ``train`` are generated from the plugin's arguments: file arguments take a
path (the plugin receives a temporary copy, as over HTTP), list arguments take the flag
repeated or a JSON list (``--labels '["cat", "dog"]'``, DEEPaaS's syntax), dict arguments a
JSON object. JSON goes to stdout, media to ``--output FILE``.

The options before the command are the CLI's, those after it the command's: a plugin's
argument may have the name of any of them (``--model``, ``--model-name``, ``--output``), and
no option is taken by a prefix of its name. stdout carries the result alone: what the plugin
prints, its child processes included, goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import mimetypes
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

import marshmallow
from marshmallow import fields

from deepaas_like import config
from deepaas_like.api import openapi
from deepaas_like.api.routes import ROUTES
from deepaas_like.cmd import install
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.model import args as model_args
from deepaas_like.model.files import UploadedFile
from deepaas_like.model.loading import resolve_model_names
from deepaas_like.protos import proto_file
from deepaas_like.serving import schemas
from deepaas_like.serving.calls import Call, CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.router import Router
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings
from deepaas_like.workers.inprocess import InProcessPool

__all__ = ["build_parser", "decode_arguments", "global_options", "main", "result_stdout", "run"]

DESCRIPTION = "Call a model plugin in this process, without a server, or install a plugin."
EPILOG = (
    "Examples: deepaas-like-cli --model-name demo predict --image cat.png --size 32; "
    "deepaas-like-cli --model-name demo train --epochs 2; deepaas-like-cli install ./my_plugin. "
    "'deepaas-like-cli --model-name NAME predict --help' lists the model's own arguments."
)


#: DEEPaaS's deepaas-cli spelling of the output file, before the command (its oslo.config
#: option ``deepaas_method_output``, "intentionally long to avoid a conflict" with plugins').
METHOD_OUTPUT = "--deepaas_method_output"


class _Parser(argparse.ArgumentParser):
    """A parser that takes no option by a prefix of its name (``allow_abbrev=False``): a
    prefix of an option (``--model``) must stay free for a plugin's argument, not be taken
    for the option (or answered "ambiguous option").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


#: The server's options that the CLI reads, declared once in :mod:`deepaas_like.settings`.
GLOBAL_OPTIONS = ("model-name", "model-namespace", "warm")


def _base_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(prog="deepaas-like-cli", description=DESCRIPTION, epilog=EPILOG, add_help=add_help)
    config.add_arguments(parser, GLOBAL_OPTIONS)
    parser.add_argument(
        METHOD_OUTPUT,
        dest="method_output",
        metavar="FILE",
        help="write the result of metadata, predict or train to FILE too (DEEPaaS's deepaas-cli option; "
        "for predict, as --output)",
    )
    return parser


def global_options(argv: list[str]) -> argparse.Namespace:
    """The options before the command; ``command`` is the command and all that follows it,
    which may repeat the names of these options (a plugin's arguments). ``model_name`` is
    the ``--model-name`` values joined by commas (None without one), ``model_namespace`` a
    string, ``warm`` a bool.
    """
    parser = _base_parser(add_help=False)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_known_args(argv)[0]
    options.model_name = ",".join(options.model_name) or None
    return options


def _help(field: fields.Field) -> str:
    parts = [str(field.metadata.get("description", "")).rstrip(".")]
    choices = next((v.choices for v in field.validators if isinstance(v, marshmallow.validate.OneOf)), None)
    if choices:
        parts.append(f"one of: {', '.join(map(str, choices))}")
    if field.load_default is not marshmallow.missing and not callable(field.load_default):
        parts.append(f"default: {field.load_default}")
    if model_args.is_file_field(field):
        parts.append("a path to a file")
    elif isinstance(field, marshmallow.fields.List):
        parts.append("repeat the flag, or give a JSON list")
    elif isinstance(field, marshmallow.fields.Dict):
        parts.append("a JSON object")
    return "; ".join(part for part in parts if part).replace("%", "%%")


def _add_argument_flags(
    parser: argparse.ArgumentParser, arguments: dict[str, fields.Field], server_supplied: set[str]
) -> None:
    for name, field in arguments.items():
        parser.add_argument(
            f"--{name}",
            dest=f"arg:{name}",
            action="append" if isinstance(field, fields.List) else "store",
            required=field.required and name not in server_supplied,
            help=_help(field),
            metavar=name.upper(),
        )


def build_parser(model: ServedModel | None) -> argparse.ArgumentParser:
    """The full parser once ``model``'s description is known (None: the commands only)."""
    parser = _base_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("metadata", help="print the model's metadata (JSON)")
    commands.add_parser("openapi", help="print the OpenAPI document of the model's routes (JSON)")
    protos = commands.add_parser(
        "protos", help="write the .proto file of the model's gRPC service (needs deepaas_like[grpc])"
    )
    protos.add_argument("--output", required=True, metavar="DIR", help="directory to write it in (made if missing)")
    hooks = (
        (("predict", {}), ("train", {}))
        if model is None
        else (("predict", model.schemas.description.predict_args), ("train", model.schemas.description.train_args))
    )
    for hook, arguments in hooks:
        if arguments is None:
            continue
        command = commands.add_parser(
            hook,
            help=f"run {hook}() with the model's arguments (--model-name M {hook} --help lists them)",
            # The plugin's arguments come last and win: its --output, --help or
            # --deepaas_method_output takes that name from the CLI's option (-h stays help).
            conflict_handler="resolve",
        )
        if model is None:
            continue
        if hook == "predict":
            command.add_argument(
                "--output",
                METHOD_OUTPUT,
                help="write the prediction to this file (required for non-JSON media)",
                metavar="FILE",
            )
        _add_argument_flags(
            command, arguments or {}, {"accept"} if hook == "predict" and model.schemas.accept_choices else set()
        )
    commands.add_parser(
        "install", help="install a plugin without letting its requirements change the server's (see install --help)"
    )
    return parser


def _json_value(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as error:
        raise InvalidArguments({name: [f"not valid JSON: {error}"]}) from None


def _flag_values(schema: type[marshmallow.Schema], namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags given, with JSON lists and objects decoded (DEEPaaS's CLI syntax)."""
    instance = schema()
    raw = {key[4:]: value for key, value in vars(namespace).items() if key.startswith("arg:") and value is not None}
    for name, value in raw.items():
        field = instance.fields[name]
        if isinstance(field, fields.List) and len(value) == 1 and value[0].lstrip().startswith("["):
            raw[name] = _json_value(name, value[0])
        elif isinstance(field, fields.Dict):
            raw[name] = _json_value(name, value)
    return raw


def decode_arguments(schema: type[marshmallow.Schema], namespace: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """The flags given as the raw arguments of a call (the call service validates them as
    the server's); file arguments are copied into ``workdir`` first, so the plugin never
    holds the user's file. Raises ``InvalidArguments``.
    """
    raw = _flag_values(schema, namespace)
    for name, value in raw.items():
        if model_args.is_file_field(schemas.instance(schema).fields[name]):
            if not os.path.isfile(value):
                raise InvalidArguments({name: [f"no such file: {value}"]})
            copy = os.path.join(workdir, f"{name}{os.path.splitext(value)[1]}")
            shutil.copyfile(value, copy)
            content_type = mimetypes.guess_type(value)[0] or "application/octet-stream"
            raw[name] = UploadedFile(name, copy, content_type, os.path.basename(value))
    return raw


async def run(argv: list[str], result: TextIO) -> int:
    """Run the command ``argv`` asks for; the result (or ``--help``) is written to ``result``.
    Raises :class:`DeepaasLikeError`, ``SystemExit`` for invalid flags.
    """
    first = global_options(argv)
    if not first.command:  # none, or only --help
        with contextlib.redirect_stdout(result):
            build_parser(None).parse_args(argv)  # prints the usage (or the help) and exits
    names = list(config.model_names([first.model_name] if first.model_name else []))
    name = resolve_model_names(names, first.model_namespace)
    if len(name) != 1:
        raise DeepaasLikeError(f"choose one model with --model-name: {', '.join(name)}")
    pool = InProcessPool(name[0], first.model_namespace, warm=first.warm)
    model = ServedModel(name[0], pool, lambda: pool)
    await model.start()
    with contextlib.redirect_stdout(result):  # a command's --help is its answer
        options = build_parser(model).parse_args(argv)
    # The same call path as the server's, without jobs: every endpoint is on, a training waited for.
    calls = CallService(Router({model.name: model}), None, Drain(), lambda kind: True)
    if options.command == "protos":
        file_name, text = proto_file(model.schemas)
        os.makedirs(options.output, exist_ok=True)
        path = os.path.join(options.output, file_name)
        with open(path, "w") as handle:
            handle.write(text)
        return _print({"status": "OK", "output": path}, result)
    if options.command == "predict":
        output = getattr(options, "output", None) or first.method_output
        return _print(await _predict(calls, model, options, output), result)
    if options.command == "metadata":
        document = model.metadata()
    elif options.command == "openapi":
        document = _openapi(model)
    else:
        document = await _train(calls, model, options)
    if first.method_output:
        _write_json(first.method_output, document)
    return _print(document, result)


def _openapi(model: ServedModel) -> dict[str, Any]:
    api_spec = openapi.AiohttpApiSpec(
        url="", title="deepaas_like", version="cli", openapi_version=openapi.OpenApiVersion.V303
    )
    openapi.add_attribute_functions(api_spec)
    openapi.document(api_spec.spec, ROUTES, {model.name: model}, Settings(database_url=""))
    return api_spec.swagger_dict()


async def _train(calls: CallService, model: ServedModel, options: argparse.Namespace) -> dict[str, Any]:
    assert model.schemas.train is not None  # the parser offers train only then
    with tempfile.TemporaryDirectory(prefix="deepaas-like-cli-") as workdir:
        raw = decode_arguments(model.schemas.train, options, workdir)
        answer = await calls.call(Call(model.name, TRAIN, raw))
    assert answer.arguments is not None
    return {"status": "done", "args": model_args.json_arguments(answer.arguments), "result": {"output": answer.output}}


async def _predict(calls: CallService, model: ServedModel, options: argparse.Namespace, output: str | None) -> Any:
    """The prediction's JSON document (written to ``output`` too when given), or, for media,
    a summary of the file ``output`` it was written to."""
    assert model.schemas.predict is not None  # the parser offers predict only then
    with tempfile.TemporaryDirectory(prefix="deepaas-like-cli-") as workdir:
        raw = decode_arguments(model.schemas.predict, options, workdir)
        prediction = (await calls.call(Call(model.name, PREDICT, raw))).prediction
        assert prediction is not None  # a synchronous prediction
        if not prediction.binary:
            if output:
                _write_json(output, prediction.document)
            return prediction.document
        if not output:
            prediction.discard()
            raise DeepaasLikeError(f"the prediction is binary: give --output FILE (or {METHOD_OUTPUT} FILE)")
        _make_parent(output)
        if prediction.file is not None:
            shutil.copyfile(prediction.file.path, output)
            prediction.discard()
        else:
            with open(output, "wb") as handle:
                handle.write(prediction.data or b"")
    return {"status": "OK", "output": output, "bytes": os.path.getsize(output), "media_type": prediction.media_type}


def _make_parent(path: str) -> None:
    """Make the folder ``path`` is to be written in, as DEEPaaS's deepaas-cli does."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _write_json(path: str, document: Any) -> None:
    _make_parent(path)
    with open(path, "w") as handle:
        json.dump(document, handle)


def _print(document: Any, result: TextIO) -> int:
    json.dump(document, result, indent=2)
    result.write("\n")
    return 0


@contextlib.contextmanager
def result_stdout() -> Iterator[TextIO]:
    """A stream on stdout for the result alone. Until it closes, file descriptor 1 is a copy of
    stderr: what the plugin prints (``print``, a Keras progress bar, C code writing to
    ``stdout``) and what the processes it starts inherit goes to stderr, and stdout parses as
    the result's JSON. Restored on exit, once what was written meanwhile is flushed to stderr.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    result = open(saved, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors)  # noqa: SIM115 - closed below
    try:
        yield result
    finally:
        sys.stdout.flush()
        with contextlib.suppress(OSError, AttributeError, TypeError):  # C's buffered stdout, where there is a libc
            ctypes.CDLL(None).fflush(None)
        result.flush()
        os.dup2(saved, 1)
        result.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 0, 2 for invalid arguments, 1 for other errors."""
    argv = sys.argv[1:] if argv is None else argv
    command = global_options(argv).command
    if command[:1] == ["install"]:
        return install.main(command[1:])
    with result_stdout() as result:
        try:
            return asyncio.run(run(argv, result))
        except InvalidArguments as error:
            json.dump(error.messages, sys.stderr)
            sys.stderr.write("\n")
            return 2
        except DeepaasLikeError as error:
            print(f"deepaas-like-cli: {error.message}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
