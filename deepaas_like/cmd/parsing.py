"""The command line of ``deepaas-like-cli``, in process and with ``--url``: the options
before the command (the CLI's), the commands, and the flags of a model's arguments after
``predict`` and ``train`` (:mod:`deepaas_like.cmd.flags`).

The options before the command are the CLI's, those after it the command's: a plugin's
argument may have the name of any of them (``--model``, ``--model-name``, ``--output``),
and no option is taken by a prefix of its name (``allow_abbrev=False`` everywhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from deepaas_like import config
from deepaas_like.cmd.flags import Flag, add_flags, flags_from_fields, flags_from_schema, request_schema
from deepaas_like.serving.schemas import ModelSchemas

__all__ = [
    "API_KEY_ENV",
    "GLOBAL_OPTIONS",
    "LOCAL_ONLY",
    "METHOD_OUTPUT",
    "REMOTE_ONLY",
    "ModelFlags",
    "build_parser",
    "global_options",
]

DESCRIPTION = (
    "Call a model plugin in this process, without a server; or, with --url, a model of a running "
    "server (its jobs and versions too); or install a plugin."
)
EPILOG = (
    "Examples: deepaas-like-cli --model-name demo predict --image cat.png --size 32; "
    "deepaas-like-cli --model-name demo train --epochs 2; "
    "deepaas-like-cli --url http://127.0.0.1:5000 --model-name demo train --epochs 2; "
    "deepaas-like-cli --url http://127.0.0.1:5000 --model-name demo jobs list; "
    "deepaas-like-cli install ./my_plugin. "
    "'deepaas-like-cli [--url URL] --model-name NAME predict --help' lists the model's own arguments."
)

#: DEEPaaS's deepaas-cli spelling of the output file, before the command (its oslo.config
#: option ``deepaas_method_output``, "intentionally long to avoid a conflict" with plugins').
METHOD_OUTPUT = "--deepaas_method_output"
#: The server's options that the CLI reads, declared once in :mod:`deepaas_like.settings`
#: (the job database and model store: where a local training is kept as a version).
GLOBAL_OPTIONS = ("model-name", "model-namespace", "warm", "database-url", "model-store")
#: Where ``--api-key`` is read from when not given (a key kept out of the shell's history).
API_KEY_ENV = "DEEPAAS_LIKE_API_KEY"
#: Commands that need a server (``--url``), and commands that run without one only.
REMOTE_ONLY = ("models", "jobs", "versions")
LOCAL_ONLY = ("protos",)


class _Parser(argparse.ArgumentParser):
    """A parser that takes no option by a prefix of its name (``allow_abbrev=False``): a
    prefix of an option (``--model``) must stay free for a plugin's argument, not be taken
    for the option (or answered "ambiguous option").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    """The flags of a model's ``predict`` and ``train`` arguments (None: the model has no
    such hook); ``chooses_accept``: the model offers media types, so ``accept`` is never
    required (the server chooses one).
    """

    predict: list[Flag] | None
    train: list[Flag] | None
    chooses_accept: bool = False

    @classmethod
    def of_schemas(cls, schemas: ModelSchemas) -> ModelFlags:
        """From the plugin's own arguments (a model run in this process)."""
        description = schemas.description
        return cls(
            None if description.predict_args is None else flags_from_fields(description.predict_args or {}),
            None if description.train_args is None else flags_from_fields(description.train_args or {}),
            bool(schemas.accept_choices),
        )

    @classmethod
    def of_document(cls, document: Mapping[str, Any], model: str) -> ModelFlags:
        """From a server's OpenAPI ``document``: the request bodies of ``model``'s predict
        and train (a version ``name@n`` takes its model's arguments).
        """
        base = model.rpartition("@")[0] or model
        found = {}
        for hook in ("predict", "train"):
            schema = request_schema(document, f"/v2/models/{base}/{hook}/")
            found[hook] = None if schema is None else flags_from_schema(document, schema)
        chooses_accept = any(flag.name == "accept" for flag in found["predict"] or ())
        return cls(found["predict"], found["train"], chooses_accept)


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
    parser.add_argument(
        "--keep-version",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="without --url, for a model whose plugin has save(): keep the training as a model version "
        "(in --database-url and --model-store, where a server started with them serves it as NAME@N), "
        "or not. Default: ask on a terminal, else not",
    )
    remote = parser.add_argument_group("a running server (with --url)")
    remote.add_argument(
        "--url", metavar="URL", help="the server's URL (http://127.0.0.1:5000): call it, not the plugin"
    )
    remote.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get(API_KEY_ENV),
        help=f"API key of a server with --auth-token (default: ${API_KEY_ENV})",
    )
    remote.add_argument(
        "--no-wait",
        action="store_true",
        help="train (and predict with --async): print the job at once, without following it (see 'jobs follow')",
    )
    remote.add_argument(
        "--async",
        dest="run_async",
        action="store_true",
        help="predict as a job (Prefer: respond-async), followed with its progress like a training, then print "
        "its result; for a long prediction",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the requests, the job's events and the log on stderr"
    )
    return parser


def global_options(argv: list[str]) -> argparse.Namespace:
    """The options before the command; ``command`` is the command and all that follows it,
    which may repeat the names of these options (a plugin's arguments). ``model_name`` is
    the ``--model-name`` values joined by commas (None without one), ``model_namespace`` a
    string, ``warm`` a bool, ``url`` None without ``--url``.
    """
    parser = _base_parser(add_help=False)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_known_args(argv)[0]
    options.model_name = ",".join(options.model_name) or None
    return options


def build_parser(flags: ModelFlags | None, remote: bool = False) -> argparse.ArgumentParser:
    """The full parser once the model's flags are known (None: the commands only);
    ``remote``: for ``--url`` (its own output option of ``openapi``).
    """
    parser = _base_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("models", help="with --url: list the server's models and their versions (JSON)")
    commands.add_parser("metadata", help="print the model's metadata (JSON)")
    commands.add_parser(
        "openapi", help="print the OpenAPI document of the model's routes (with --url: the server's) (JSON)"
    )
    protos = commands.add_parser(
        "protos", help="write the .proto file of the model's gRPC service (needs deepaas_like[grpc])"
    )
    protos.add_argument("--output", required=True, metavar="DIR", help="directory to write it in (made if missing)")
    _add_hooks(commands, flags)
    _add_jobs(commands)
    _add_versions(commands)
    commands.add_parser(
        "install", help="install a plugin without letting its requirements change the server's (see install --help)"
    )
    return parser


def _add_hooks(commands: Any, flags: ModelFlags | None) -> None:
    hooks = (("predict", []), ("train", [])) if flags is None else (("predict", flags.predict), ("train", flags.train))
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
        if flags is None:
            continue
        if hook == "predict":
            command.add_argument(
                "--output",
                METHOD_OUTPUT,
                help="write the prediction to this file (required for non-JSON media)",
                metavar="FILE",
            )
        add_flags(command, arguments, {"accept"} if hook == "predict" and flags.chooses_accept else set())


def _kind(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind", choices=("train", "predict"), default="train", help="trainings, or asynchronous predictions"
    )


def _add_jobs(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="with --url: the model's trainings (and asynchronous predictions)")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    listing = actions.add_parser("list", help="list the jobs, oldest first (JSON)")
    _kind(listing)
    listing.add_argument("--status", choices=("pending", "running", "done", "error", "cancelled"))
    listing.add_argument("--order", choices=("asc", "desc"), default="asc", help="by creation; desc: newest first")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N jobs")
    for action, text in (
        ("show", "print the job (JSON)"),
        ("follow", "show the job's progress until it ends, then print it (JSON)"),
        ("cancel", "cancel the job (its worker is stopped); print it (JSON)"),
    ):
        one = actions.add_parser(action, help=text)
        one.add_argument("uuid", metavar="UUID", help="the job's uuid")
        _kind(one)


def _add_versions(commands: Any) -> None:
    versions = commands.add_parser("versions", help="with --url: the model versions its trainings made")
    actions = versions.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    actions.add_parser("list", help="list the versions, newest first (JSON)")
    actions.add_parser("rollback", help="undo the latest promotion (admin key)")
    for action, text in (
        ("show", "print version N (JSON)"),
        ("promote", "have the model's name serve version N (admin key)"),
        ("delete", "delete version N (admin key; not the promoted one)"),
    ):
        one = actions.add_parser(action, help=text)
        one.add_argument("number", type=int, metavar="N", help="the version's number (N of NAME@N)")
