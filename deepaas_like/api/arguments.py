"""Read a request's arguments (query string, multipart or urlencoded form, JSON body) and
parse them with webargs against a model's argument schema.

Uploaded files are streamed to disk in a temporary directory of the request's own, never
held whole in memory; the caller deletes that directory when the call ends.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Awaitable
from typing import Any, TypeVar

import marshmallow
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from multidict import MultiDict
from webargs.aiohttpparser import AIOHTTPParser
from webargs.multidictproxy import MultiDictProxy

from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments, StartupError
from deepaas_like.model.args import UploadedFile, is_file_field

_RAW = "deepaas_like.raw_arguments"
_CHUNK = 256 * 1024  # bytes read from the socket per step of an upload
#: Deepest nesting accepted in a JSON body; deeper values would recurse in validation,
#: pickling and storage (Python's recursion limit is 1000 frames).
MAX_JSON_DEPTH = 100
T = TypeVar("T")


class BodyTooLarge(DeepaasLikeError):
    """The request body exceeds ``client-max-size``."""

    status = 413


class UnreadableBody(InvalidArguments):
    """The body cannot be decoded as its headers say; the connection closes after the answer."""

    close_connection = True


class BodyTimeout(DeepaasLikeError):
    """The client stopped sending the request body for ``body-timeout`` seconds."""

    status = 408


class _Parser(AIOHTTPParser):
    DEFAULT_UNKNOWN_BY_LOCATION = {**AIOHTTPParser.DEFAULT_UNKNOWN_BY_LOCATION, "request": marshmallow.EXCLUDE}

    def handle_error(self, error: marshmallow.ValidationError, req: Any, schema: Any, *, error_status_code: Any, error_headers: Any) -> Any:  # noqa: ARG002
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        # webargs files messages under the location they came from; clients want the fields.
        if len(messages) == 1 and next(iter(messages)) in ("request", "query", "json", "form"):
            messages = next(iter(messages.values()))
        raise InvalidArguments(messages)


parser = _Parser()


@parser.location_loader("request")
def _load_request(request: web.Request, schema: marshmallow.Schema) -> Any:
    raw = request[_RAW]
    if isinstance(raw, MultiDict):
        return MultiDictProxy(raw, schema)
    return raw


def check_upload_dir(directory: str | None) -> None:
    """Raise :class:`StartupError` unless uploads can be written in ``directory`` (None: the
    system's temporary directory).
    """
    if directory is None:
        return
    if not os.path.isdir(directory):
        raise StartupError(f"the upload directory {directory} does not exist (--upload-dir); create it first")
    try:
        os.rmdir(tempfile.mkdtemp(prefix="deepaas-like-check-", dir=directory))
    except OSError as error:
        raise StartupError(f"cannot write in the upload directory {directory} (--upload-dir): {error.strerror or error}") from error


UPLOAD_PREFIX = "deepaas-like-upload-"
# deepaas-like-upload-<database tag>-<host tag>-<pid>-<random>: whose folder it is.
_UPLOAD_FOLDER = re.compile(r"^deepaas-like-upload-([0-9a-f]{8})-([0-9a-f]{8})-([0-9]+)-")


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _database_tag(database_url: str | None) -> str:
    if not database_url:
        return "0" * 8
    from deepaas_like.jobs.store import async_url

    try:
        url = async_url(database_url)
    except DeepaasLikeError:
        return _tag(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        url = url.set(database=os.path.abspath(url.database))
    return _tag(url.render_as_string(hide_password=True))


@functools.lru_cache(maxsize=8)
def _folder_prefix(database_url: str | None, pid: int) -> str:
    return f"{UPLOAD_PREFIX}{_database_tag(database_url)}-{_tag(socket.gethostname())}-{pid}-"


class Uploads:
    """The temporary directory holding one request's uploaded files.

    Its name says whose it is, ``deepaas-like-upload-<database>-<host>-<pid>-<random>``
    (tags are hashes of the job database's URL and of the host name), so that a server
    starting later can tell an orphan, whose server died, from a live sibling's upload
    (see :func:`remove_orphaned_uploads`).
    """

    def __init__(self, parent: str | None = None, database_url: str | None = None) -> None:
        self.directory: str | None = None
        self._parent = parent
        self._database_url = database_url

    def new_path(self, original_filename: str) -> str:
        """A fresh path for an upload; only the original name's extension is kept."""
        if self.directory is None:
            prefix = _folder_prefix(self._database_url, os.getpid())
            self.directory = tempfile.mkdtemp(prefix=prefix, dir=self._parent)
        suffix = os.path.splitext(os.path.basename(original_filename or ""))[1]
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 16 else ""
        handle, path = tempfile.mkstemp(dir=self.directory, suffix=suffix)
        os.close(handle)
        return path

    def cleanup(self) -> None:
        """Delete every upload of the request."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def remove_orphaned_uploads(
    parent: str | None, database_url: str, owned: set[str], live: set[tuple[str, int]]
) -> list[str]:
    """Delete the upload folders in ``parent`` (None: the system's temporary directory)
    that servers of this job database left behind when they were killed; returns them.

    A folder stays when a pending or running job owns it (``owned``), when the process
    that made it is alive (on this host: the process exists and is not this one, which
    has uploaded nothing yet; on another host: it is among ``live``, the ``(host, pid)``
    of instances with a fresh heartbeat), when another job database's servers made it,
    and when its name predates this scheme.
    """
    directory = parent or tempfile.gettempdir()
    mine = _database_tag(database_url)
    here = _tag(socket.gethostname())
    live_tags = {(_tag(host), pid) for host, pid in live}
    owned = {os.path.normpath(path) for path in owned}
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _UPLOAD_FOLDER.match(name)
        if match is None or match.group(1) != mine:
            continue
        path = os.path.join(directory, name)
        host, pid = match.group(2), int(match.group(3))
        alive = _process_alive(pid) if host == here else (host, pid) in live_tags
        if alive or os.path.normpath(path) in owned or not os.path.isdir(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier server that had our pid (a restarted container): we made none yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


async def read_arguments(
    request: web.Request, uploads: Uploads, max_size: int, body_timeout: float | None = None
) -> MultiDict | dict[str, Any]:
    """Collect the raw arguments of ``request``: query string plus body.

    Returns a MultiDict for query/form requests, a dict for JSON bodies. Raises
    :class:`InvalidArguments` (``{"_body": [...]}`` or ``{"<part>": [...]}``) for a body that
    cannot be read as its headers say (malformed, undecodable, nested too deeply),
    :class:`BodyTooLarge` past ``max_size`` bytes (0: no limit) and :class:`BodyTimeout`
    when the client stops sending for ``body_timeout`` seconds (None: no limit).
    """
    raw: MultiDict = MultiDict(request.query)
    content_type = request.content_type
    try:
        if content_type == "multipart/form-data":
            await _read_multipart(request, raw, uploads, max_size, body_timeout)
        elif content_type == "application/x-www-form-urlencoded":
            raw.extend(await _within(body_timeout, request.post()))
        elif (content_type == "application/json" or content_type.endswith("+json")) and request.can_read_body:
            body = _json_object(await _within(body_timeout, request.read()))
            return {**{key: raw.getall(key) if len(raw.getall(key)) > 1 else raw[key] for key in raw}, **body}
    except UnicodeDecodeError as error:
        raise InvalidArguments({"_body": [f"the body is not valid UTF-8: {error.reason} at byte {error.start}"]}) from None
    except (RequestPayloadError, HttpProcessingError) as error:
        # e.g. a Content-Encoding the body is not in (a fake gzip). aiohttp keeps the error in
        # the body stream and would read it again after the answer, to drain the connection,
        # and log it as unhandled: mark the body as ended, and close the connection instead.
        request.content.feed_eof()
        raise UnreadableBody({"_body": [f"the body cannot be read: {_cause(error)}"]}) from None
    return raw


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except RecursionError:
        raise InvalidArguments({"_body": [f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"]}) from None
    except ValueError as error:
        raise InvalidArguments({"_body": [f"invalid JSON: {error}"]}) from None
    if not isinstance(body, dict):
        raise InvalidArguments({"_body": ["the JSON body must be an object of arguments"]})
    if _depth(body) > MAX_JSON_DEPTH:
        # Deep values would recurse in validation, pickling and storage later on.
        raise InvalidArguments({"_body": [f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"]})
    return body


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
            deepest = max(deepest, depth + 1)
    return deepest


async def _within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, or :class:`BodyTimeout` after ``seconds`` (None: no limit)."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise BodyTimeout(f"the request body stopped arriving for {seconds:g} s (body-timeout)") from None


def _cause(error: BaseException) -> str:
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {cause}"


async def _read_multipart(
    request: web.Request, raw: MultiDict, uploads: Uploads, max_size: int, body_timeout: float | None
) -> None:
    received = 0
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, HttpProcessingError) as error:
        raise InvalidArguments({"_body": [f"malformed multipart body: {error}"]}) from error
    while True:
        try:
            part = await _within(body_timeout, reader.next())
        except (ValueError, AssertionError, HttpProcessingError) as error:
            raise InvalidArguments({"_body": [f"malformed multipart body: {error}"]}) from error
        if part is None:
            return
        if not hasattr(part, "read_chunk") or part.name is None:
            continue  # nested multiparts and unnamed parts carry no argument
        if part.filename is None:
            try:
                value = await _within(body_timeout, part.read(decode=True))
                text = value.decode(part.get_charset(default="utf-8"), errors="replace")
            except LookupError as error:  # an unknown charset
                raise InvalidArguments({part.name: [f"cannot decode the part: {error}"]}) from None
            except (ValueError, RuntimeError) as error:  # bad base64, unknown transfer encoding
                raise InvalidArguments({part.name: [f"cannot decode the part: {type(error).__name__}: {error}"]}) from None
            received += len(value)
            _check_size(received, max_size)
            raw.add(part.name, text)
            continue
        path = uploads.new_path(part.filename)
        with open(path, "wb") as handle:
            while chunk := await _within(body_timeout, part.read_chunk(_CHUNK)):
                received += len(chunk)
                _check_size(received, max_size)
                handle.write(chunk)
        content_type = part.headers.get("Content-Type", "application/octet-stream")
        raw.add(part.name, UploadedFile(part.name, path, content_type, part.filename))


def _check_size(received: int, max_size: int) -> None:
    if max_size and received > max_size:
        raise BodyTooLarge(f"request body exceeds the limit of {max_size} bytes (client-max-size)")


@functools.lru_cache(maxsize=256)
def _instance(schema: type[marshmallow.Schema]) -> marshmallow.Schema:
    # Building a Schema copies its fields; one instance per class serves every request.
    return schema()


def header_located(field: marshmallow.fields.Field) -> bool:
    """True for an argument declared DEEPaaS-style to come from a header:
    ``location="headers"`` or ``metadata={"location": "headers"}``.
    """
    return field.metadata.get("location") in ("headers", "header")


async def load_arguments(request: web.Request, raw: MultiDict | dict[str, Any], schema: type[marshmallow.Schema]) -> dict[str, Any]:
    """Validate ``raw`` (from :func:`read_arguments`) against ``schema``.

    Header-located arguments missing from the query and body are read from the request
    header of that name (``_`` may be written ``-``). Returns the loaded arguments. Raises
    :class:`InvalidArguments` with ``{"field": ["message", ...]}``.
    """
    instance = _instance(schema)
    for name, field in instance.fields.items():
        if name not in raw and header_located(field):
            value = request.headers.get(name, request.headers.get(name.replace("_", "-")))
            if value is not None:
                raw[name] = value
    request[_RAW] = raw
    loaded = await parser.parse(instance, request, location="request", unknown=marshmallow.EXCLUDE)
    not_files = {
        name: ["must be an uploaded file (multipart/form-data)"]
        for name, field in instance.fields.items()
        if is_file_field(field) and name in raw and not isinstance(loaded.get(name), UploadedFile)
    }
    if not_files:
        raise InvalidArguments(not_files)
    return loaded
