"""``deepaas-like-cli --url URL``: the commands against a running server, through
:mod:`deepaas_like.client`.

``models``, ``metadata``, ``openapi``, ``predict`` and ``train`` (with the flags of the
model's arguments, read from the server's OpenAPI document), ``jobs list|show|follow|cancel``
and ``versions list|show|promote|rollback|delete``. A training is followed until it ends:
a progress bar with the plugin's messages and metrics on a terminal, one JSON line per
change otherwise, on stderr; stdout carries the final result alone (JSON). Exit codes: 0,
2 for arguments the CLI or the server refuse (their messages by name on stderr, as JSON),
1 for other errors and a job that ended in ``error`` or ``cancelled``, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm.contrib.logging import logging_redirect_tqdm  # type: ignore[import-untyped]

from deepaas_like.client import ArgumentsError, Client, ClientError, Job, JobCancelled, ProgressDisplay, ServerError
from deepaas_like.client import operations as ops
from deepaas_like.client.encoding import is_json
from deepaas_like.cmd.flags import FILE, LIST, Flag, flag_values
from deepaas_like.cmd.parsing import METHOD_OUTPUT, ModelFlags, build_parser
from deepaas_like.cmd.printing import failed, make_parent, print_json, write_json
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments

__all__ = ["main", "remote_arguments", "run"]

LOG = logging.getLogger(__name__)


def main(argv: list[str], first: argparse.Namespace) -> int:
    """Run ``argv`` (with ``--url``; ``first``: its options before the command) against the
    server; the exit code."""
    try:
        with Client(first.url, api_key=first.api_key) as client:
            return run(client, argv, first, sys.stdout)
    except ArgumentsError as error:  # the server's 422
        json.dump(error.fields, sys.stderr)
        sys.stderr.write("\n")
        return 2
    except ClientError as error:
        where = "" if first.url in str(error) else f"{first.url}: "  # a failed request names its URL
        print(f"deepaas-like-cli: {where}{error}", file=sys.stderr)
        return 1
    except (DeepaasLikeError, KeyboardInterrupt) as error:
        return failed(error)
    except BrokenPipeError:  # stdout closed early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run(client: Client, argv: list[str], first: argparse.Namespace, result: TextIO) -> int:
    """Run the command ``argv`` asks for with ``client``; the result is written to
    ``result``. Raises ``ClientError``, ``DeepaasLikeError`` and ``SystemExit`` (flags).
    A followed job that ended in ``error`` or ``cancelled`` prints its object (exit code
    1); Ctrl-C while following stops following, not the job (130).
    """
    try:
        return _run(client, argv, first, result)
    except _Stopped as stopped:
        if stopped.job is not None:
            print_json(stopped.job, result)
        return stopped.code


def _run(client: Client, argv: list[str], first: argparse.Namespace, result: TextIO) -> int:
    command = first.command[0] if first.command else None
    flags, model = None, None
    if command in ("predict", "train"):
        model = _model(client, first)
        flags = ModelFlags.of_document(client.openapi(), model)
        if flags.predict is None and flags.train is None:
            client.metadata(model)  # raises NotFoundError naming it, rather than a usage error
    options = build_parser(flags).parse_args(argv)  # exits with the usage, or --help
    if options.command == "models":
        return print_json(client.models(), result)
    if options.command == "openapi":
        return print_json(client.openapi(), result)
    model = model or _model(client, first)
    if options.command == "metadata":
        document = client.metadata(model)
        if first.method_output:
            write_json(first.method_output, document)
        return print_json(document, result)
    if options.command == "predict":
        assert flags is not None and flags.predict is not None  # the parser offers predict only then
        output = getattr(options, "output", None) or first.method_output
        arguments = remote_arguments(flags.predict, options)
        if first.run_async:
            return _predict_async(client, model, arguments, output, first, result)
        return print_json(_predict(client, model, arguments, output), result)
    if options.command == "train":
        assert flags is not None and flags.train is not None
        job = _train(client, model, remote_arguments(flags.train, options))
        if first.no_wait:
            return print_json(job.document, result)
        _started(job, first)
        return _follow(job, first, result)
    if options.command == "jobs":
        return _jobs(client, model, options, first, result)
    return _versions(client, model, options, result)


def _model(client: Client, first: argparse.Namespace) -> str:
    """The model the command is about: ``--model-name``, else the server's only model."""
    if first.model_name:
        if "," in first.model_name:
            raise DeepaasLikeError(f"choose one model with --model-name, not {first.model_name}")
        return str(first.model_name)
    names = [str(model.get("id") or model.get("name")) for model in client.models() if "parent" not in model]
    if len(names) != 1:
        raise DeepaasLikeError(f"choose one model with --model-name: {', '.join(names) or 'the server serves none'}")
    return names[0]


# Arguments -------------------------------------------------------------------------------


def _typed(value: str, kind: str | None) -> Any:
    """``value`` as the JSON type the server declares (the server validates it: a value
    that does not parse goes as it is, and is answered 422 naming its argument)."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            number = float(value)
            return number if math.isfinite(number) else value
        if kind == "boolean" and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    except ValueError:
        pass
    return value


def _file(name: str, value: Any) -> Path:
    path = Path(str(value))
    if not path.is_file():
        raise InvalidArguments({name: [f"no such file: {value}"]})
    return path


def remote_arguments(flags: Iterable[Flag], namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags given as the client's arguments: files as :class:`pathlib.Path` (checked to
    exist: ``InvalidArguments`` naming the argument), JSON lists and objects decoded, values
    of numeric and boolean arguments converted.
    """
    flags = list(flags)
    raw = flag_values(flags, namespace)
    by_name = {flag.name: flag for flag in flags}
    for name, value in raw.items():
        flag = by_name[name]
        if flag.shape == FILE:
            raw[name] = _file(name, value)
        elif flag.shape == LIST:
            raw[name] = [_file(name, item) if flag.item_file else _item(item, flag.type) for item in value]
        elif isinstance(value, str):
            raw[name] = _typed(value, flag.type)
    return raw


def _item(value: Any, kind: str | None) -> Any:
    return _typed(value, kind) if isinstance(value, str) else value


# Predictions and trainings ------------------------------------------------------------------


def _answer(model: str, arguments: Mapping[str, Any]) -> ops.Operation[httpx.Response]:
    """A synchronous prediction whose answer is kept as it came (its media type and bytes)."""
    operation = ops.predict(model, arguments)
    response = yield next(operation)
    if response.status_code >= 400:
        ops.answer(response)
    return response


def _train(client: Client, model: str, arguments: Mapping[str, Any]) -> Job:
    """Start a training, as :meth:`Client.train` does, with ``arguments`` as a mapping: a
    plugin's argument may be named ``model`` (``Client.train(model, **arguments)`` could
    not take it)."""
    document = client.run(ops.start(model, "train", arguments))
    return Job(client, model, document["uuid"], "train", document)


def _predict(client: Client, model: str, arguments: Mapping[str, Any], output: str | None) -> Any:
    """The prediction's JSON document (written to ``output`` too when given), or, for media,
    a summary of the file ``output`` it was written to (as without ``--url``)."""
    response = client.run(_answer(model, arguments))
    media_type = response.headers.get("Content-Type", "application/octet-stream")
    if is_json(media_type):
        document = response.json()
        if output:
            write_json(output, document)
        return document
    if not output:
        raise DeepaasLikeError(f"the prediction is {media_type}: give --output FILE (or {METHOD_OUTPUT} FILE)")
    make_parent(output)
    Path(output).write_bytes(response.content)
    return {"status": "OK", "output": output, "bytes": len(response.content), "media_type": media_type}


def _predict_async(
    client: Client,
    model: str,
    arguments: Mapping[str, Any],
    output: str | None,
    first: argparse.Namespace,
    result: TextIO,
) -> int:
    """``--async``: the prediction as a job followed like a training; then its result, as
    a synchronous prediction prints it (media written to ``output``)."""
    document = client.run(ops.start(model, "predict", arguments))
    job = Job(client, model, document["uuid"], "predict", document)
    if first.no_wait:
        return print_json(job.document, result)
    _started(job, first)
    final = _wait(job, first)
    stored = final.get("result") or {}
    media_type = stored.get("media_type") or "application/json"
    if is_json(media_type):
        if output:
            write_json(output, stored.get("output"))
        return print_json(stored.get("output"), result)
    if not output:
        raise DeepaasLikeError(
            f"the prediction is {media_type}: give --output FILE (its job {job.uuid} keeps it meanwhile)"
        )
    make_parent(output)
    written = client.run(ops.result(final, model, None, output))
    return print_json(
        {"status": "OK", "output": output, "bytes": os.path.getsize(written), "media_type": media_type}, result
    )


class _VerboseDisplay(ProgressDisplay):
    """A progress display that also logs each job object the events stream brings."""

    def update(self, job: Mapping[str, Any]) -> None:
        shown = {key: job.get(key) for key in ("uuid", "status", "progress", "metrics") if job.get(key) is not None}
        LOG.info("event: %s", json.dumps(shown))
        super().update(job)


def _started(job: Job, first: argparse.Namespace) -> None:
    """On a terminal (or ``--verbose``), the job's uuid and how to find it again."""
    if sys.stderr.isatty() or first.verbose:
        what = "training" if job.kind == "train" else "prediction"
        print(
            f"{what} {job.uuid} of {job.model}: {job.document.get('status')} "
            f"(Ctrl-C stops following it, not the {what}; 'jobs follow|cancel {job.uuid}' later)",
            file=sys.stderr,
        )


class _Stopped(Exception):
    """Following a job ended without its result: ``code`` is the exit code, ``job`` the
    object to print (None: none)."""

    def __init__(self, code: int, job: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.job = job


def _wait(job: Job, first: argparse.Namespace) -> dict[str, Any]:
    """Follow ``job`` with a progress display until it ends ``done``; its final object.
    Raises :class:`_Stopped` (1 with the job object) when it ended in ``error`` or
    ``cancelled``, and (130) after Ctrl-C, which stops following, not the job."""
    display = _VerboseDisplay(sys.stderr) if first.verbose else ProgressDisplay(sys.stderr)
    try:
        with logging_redirect_tqdm():  # log lines above the bar, not through it
            return job.wait(progress=display)
    except (ServerError, JobCancelled) as error:
        if error.job is None:
            raise
        display.close()
        print(f"deepaas-like-cli: {job.kind} {job.uuid} ended {error.job.get('status')}: {error}", file=sys.stderr)
        raise _Stopped(1, error.job) from None
    except KeyboardInterrupt:
        display.close()
        again = f"deepaas-like-cli --url {first.url} --model-name {job.model} jobs"
        what = "training" if job.kind == "train" else "prediction"
        print(
            f"\ndeepaas-like-cli: the {what} {job.uuid} goes on on the server: follow it again with "
            f"'{again} follow {job.uuid}', cancel it with '{again} cancel {job.uuid}'",
            file=sys.stderr,
        )
        raise _Stopped(130) from None
    finally:
        display.close()


def _follow(job: Job, first: argparse.Namespace, result: TextIO) -> int:
    """Follow ``job`` until it ends; print its final object (raises :class:`_Stopped` as
    :func:`_wait` does)."""
    final = _wait(job, first)
    if first.method_output:
        write_json(first.method_output, final)
    return print_json(final, result)


# Jobs and versions ------------------------------------------------------------------------


def _jobs(client: Client, model: str, options: argparse.Namespace, first: argparse.Namespace, result: TextIO) -> int:
    if options.action == "list":
        jobs = client.jobs(model, options.kind, status=options.status, order=options.order, limit=options.limit)
        return print_json([job.document for job in jobs], result)
    job = client.job(model, options.uuid, options.kind)
    if options.action == "show":
        return print_json(job.document, result)
    if options.action == "cancel":
        return print_json(job.cancel(), result)
    return _follow(job, first, result)


def _versions(client: Client, model: str, options: argparse.Namespace, result: TextIO) -> int:
    if options.action == "list":
        return print_json(client.versions(model), result)
    if options.action == "show":
        return print_json(client.version(model, options.number), result)
    if options.action == "promote":
        return print_json(client.promote(model, options.number), result)
    if options.action == "rollback":
        return print_json(client.rollback(model), result)
    return print_json(client.delete_version(model, options.number), result)
