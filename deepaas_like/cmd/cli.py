"""``deepaas-like-cli``: call one model in-process, without a server, or a running server's
with ``--url``; install plugins.

``deepaas-like-cli --model-name demo predict --image cat.png --size 32 --output out.png``;
subcommands ``metadata``, ``predict``, ``train``, ``openapi``, ``protos`` (the gRPC
service's ``.proto`` file) and ``install``; with ``--url URL`` also ``models``, ``jobs``
and ``versions`` (:mod:`deepaas_like.cmd.remote`). Flags of ``predict`` and ``train`` are
generated from the plugin's arguments (:mod:`deepaas_like.cmd.flags`): file arguments take
a path (the plugin receives a temporary copy, as over HTTP), list arguments take the flag
repeated or a JSON list (``--labels '["cat", "dog"]'``, DEEPaaS's syntax), dict arguments a
JSON object. JSON goes to stdout, media to ``--output FILE``.

What the plugin reports with ``deepaas_like.progress.report()`` is shown on stderr as it
happens: a progress bar with its messages and metrics on a terminal, JSON lines otherwise
(:mod:`deepaas_like.cmd.local_progress`). A training of a plugin with ``save`` may be kept
as a model version (``--keep-version``; asked on a terminal):
:mod:`deepaas_like.cmd.local_versions`.

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
import logging
import mimetypes
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from deepaas_like import config
from deepaas_like.api import openapi
from deepaas_like.api.routes import ROUTES
from deepaas_like.client import ProgressDisplay
from deepaas_like.cmd import install, remote
from deepaas_like.cmd.flags import flag_values
from deepaas_like.cmd.local_progress import LocalJob
from deepaas_like.cmd.local_versions import LocalVersion
from deepaas_like.cmd.parsing import LOCAL_ONLY, METHOD_OUTPUT, REMOTE_ONLY, ModelFlags, build_parser, global_options
from deepaas_like.cmd.printing import failed, make_parent, print_json, write_json
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments
from deepaas_like.kinds import PREDICT, TRAIN, Kind
from deepaas_like.model import args as model_args
from deepaas_like.model.files import UploadedFile
from deepaas_like.model.loading import resolve_model_names
from deepaas_like.protos import proto_file
from deepaas_like.serving import schemas
from deepaas_like.serving.calls import Call, CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.router import Router
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings, default_model_store
from deepaas_like.workers.inprocess import InProcessPool

__all__ = ["build_parser", "decode_arguments", "global_options", "main", "result_stdout", "run"]


def decode_arguments(model: ServedModel, kind: Kind, namespace: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """The flags given as the raw arguments of a ``kind`` call of ``model`` (the call
    service validates them as the server's); file arguments are copied into ``workdir``
    first, so the plugin never holds the user's file. Raises ``InvalidArguments``.
    """
    flags = ModelFlags.of_schemas(model.schemas)
    schema = model.schemas.require(kind)
    raw = flag_values((flags.predict if kind == PREDICT else flags.train) or [], namespace)
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
    """Run the command ``argv`` asks for, the plugin in this process; the result (or
    ``--help``) is written to ``result``. Raises :class:`DeepaasLikeError`, ``SystemExit``
    for invalid flags.
    """
    first = global_options(argv)
    if not first.command:  # none, or only --help
        with contextlib.redirect_stdout(result):
            build_parser(None).parse_args(argv)  # prints the usage (or the help) and exits
    if first.command[0] in REMOTE_ONLY:
        raise DeepaasLikeError(f"{first.command[0]} needs a running server: give --url URL before the command")
    names = list(config.model_names([first.model_name] if first.model_name else []))
    name = resolve_model_names(names, first.model_namespace)
    if len(name) != 1:
        raise DeepaasLikeError(f"choose one model with --model-name: {', '.join(name)}")
    pool = InProcessPool(name[0], first.model_namespace, warm=first.warm)
    model = ServedModel(name[0], pool, lambda: pool)
    await model.start()
    with contextlib.redirect_stdout(result):  # a command's --help is its answer
        options = build_parser(ModelFlags.of_schemas(model.schemas)).parse_args(argv)
    # The same call path as the server's, without jobs: every endpoint is on, a training waited for.
    calls = CallService(Router({model.name: model}), None, Drain(), lambda kind: True)
    if options.command == "protos":
        file_name, text = proto_file(model.schemas)
        os.makedirs(options.output, exist_ok=True)
        path = os.path.join(options.output, file_name)
        with open(path, "w") as handle:
            handle.write(text)
        return print_json({"status": "OK", "output": path}, result)
    if options.command == "predict":
        output = getattr(options, "output", None) or first.method_output
        return print_json(await _predict(calls, model, options, output), result)
    if options.command == "metadata":
        document = model.metadata()
    elif options.command == "openapi":
        document = _openapi(model)
    else:
        document = await _train(calls, model, options, first)
    if first.method_output:
        write_json(first.method_output, document)
    return print_json(document, result)


def _openapi(model: ServedModel) -> dict[str, Any]:
    api_spec = openapi.AiohttpApiSpec(
        url="", title="deepaas_like", version="cli", openapi_version=openapi.OpenApiVersion.V303
    )
    openapi.add_attribute_functions(api_spec)
    openapi.document(api_spec.spec, ROUTES, {model.name: model}, Settings(database_url=""))
    return api_spec.swagger_dict()


def _interactive() -> bool:
    """Whether a person can answer a question: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


async def _local_version(model: ServedModel, first: argparse.Namespace) -> LocalVersion | None:
    """Where a local training of ``model`` is saved to become a version: None for a plugin
    without ``save``, with ``--no-keep-version``, and, without either flag, when no one
    can be asked (the default answer is no)."""
    if not model.makes_versions or first.keep_version is False:
        return None
    if first.keep_version is None and not _interactive():
        print(
            f"deepaas-like-cli: {model.name} makes model versions; this training is not kept as one "
            "(--keep-version keeps it)",
            file=sys.stderr,
        )
        return None
    store = first.model_store or default_model_store(first.database_url)
    return await LocalVersion.open(model.name, first.database_url, store)


async def _train(
    calls: CallService, model: ServedModel, options: argparse.Namespace, first: argparse.Namespace
) -> dict[str, Any]:
    """Run the training, its reports shown as they come; the training's document, with
    ``result.version`` when it was kept as a model version (what ``save`` wrote is removed
    otherwise, also when the training fails or is stopped)."""
    version = await _local_version(model, first)
    kept = None
    try:
        job = LocalJob(ProgressDisplay(sys.stderr))
        with tempfile.TemporaryDirectory(prefix="deepaas-like-cli-") as workdir:
            raw = decode_arguments(model, TRAIN, options, workdir)
            try:
                save_to = None if version is None else version.save_to
                answer = await calls.call(Call(model.name, TRAIN, raw), on_progress=job.report, save_to=save_to)
            except BaseException:
                job.end("error")
                raise
            job.end("done")
        assert answer.arguments is not None
        arguments = model_args.json_arguments(answer.arguments)
        document: dict[str, Any] = {"status": "done", "args": arguments, "result": {"output": answer.output}}
        if job.metrics:
            document["metrics"] = job.metrics
        if version is not None and await _keep(version, first.keep_version):
            kept = document["result"]["version"] = await version.keep(arguments, answer.output, job.metrics)
            print(f"deepaas-like-cli: kept as version {kept}", file=sys.stderr)
        return document
    finally:
        if version is not None:
            if kept is None:
                await version.discard()
            await version.close()


async def _keep(version: LocalVersion, keep: bool | None) -> bool:
    """``--keep-version``, else the answer of the person at the terminal (default no)."""
    if keep is not None:
        return keep
    number = await version.next_number()
    sys.stderr.write(f"Keep this training as version {number} of {version.model} in {version.store.url}? [y/N] ")
    sys.stderr.flush()
    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


async def _predict(calls: CallService, model: ServedModel, options: argparse.Namespace, output: str | None) -> Any:
    """The prediction's JSON document (written to ``output`` too when given), or, for media,
    a summary of the file ``output`` it was written to; what the plugin reports meanwhile
    is shown as it comes."""
    with tempfile.TemporaryDirectory(prefix="deepaas-like-cli-") as workdir:
        raw = decode_arguments(model, PREDICT, options, workdir)
        job = LocalJob(ProgressDisplay(sys.stderr))
        try:
            prediction = (await calls.call(Call(model.name, PREDICT, raw), on_progress=job.report)).prediction
        except BaseException:
            job.end("error")
            raise
        job.end("done")
        assert prediction is not None  # a synchronous prediction
        if not prediction.binary:
            if output:
                write_json(output, prediction.document)
            return prediction.document
        if not output:
            prediction.discard()
            raise DeepaasLikeError(f"the prediction is binary: give --output FILE (or {METHOD_OUTPUT} FILE)")
        make_parent(output)
        if prediction.file is not None:
            shutil.copyfile(prediction.file.path, output)
            prediction.discard()
        else:
            with open(output, "wb") as handle:
                handle.write(prediction.data or b"")
    return {"status": "OK", "output": output, "bytes": os.path.getsize(output), "media_type": prediction.media_type}


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


def verbose_logging() -> None:
    """``--verbose``: the log (deepaas_like's, the plugin's, the HTTP client's requests)
    on stderr, from INFO up."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 0, 2 for invalid arguments, 1 for other errors (130: stopped
    with Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else argv
    first = global_options(argv)
    if first.command[:1] == ["install"]:
        return install.main(first.command[1:])
    if first.verbose:
        verbose_logging()
    if first.url is not None and first.command[:1] and first.command[0] in LOCAL_ONLY:
        print(f"deepaas-like-cli: {first.command[0]} runs the plugin in this process: leave out --url", file=sys.stderr)
        return 2
    if first.url is not None:
        return remote.main(argv, first)
    with result_stdout() as result:
        try:
            return asyncio.run(run(argv, result))
        except (DeepaasLikeError, KeyboardInterrupt) as error:
            return failed(error)


if __name__ == "__main__":
    sys.exit(main())
