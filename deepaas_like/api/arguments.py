"""Read a request's arguments (query string, multipart or urlencoded form, JSON body) into
the raw arguments of a call, which the call service validates
(:class:`~deepaas_like.serving.calls.CallService`); parse a job listing's query with webargs.

Uploaded files are streamed to disk in a temporary directory of the request's own, never
held whole in memory; the caller deletes that directory when the call ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import math
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import marshmallow
from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from multidict import MultiDict
from webargs.aiohttpparser import AIOHTTPParser
from webargs.multidictproxy import MultiDictProxy

from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments
from deepaas_like.model.args import UploadedFile
from deepaas_like.serving import schemas
from deepaas_like.serving.schemas import ListingArgs
from deepaas_like.serving.uploads import Uploads

__all__ = [
    "DECODED_CODINGS",
    "MAX_JSON_DEPTH",
    "BodyTimeout",
    "BodyTooLarge",
    "Limits",
    "TooManyParts",
    "UnreadableBody",
    "UnsupportedEncoding",
    "decode_arguments",
    "header_located",
    "listing_arguments",
    "read_arguments",
]

_CHUNK = 256 * 1024  # bytes read from the socket per step of an upload
#: Deepest nesting accepted in a JSON body; deeper values would recurse in validation,
#: pickling and storage (Python's recursion limit is 1000 frames).
MAX_JSON_DEPTH = 100
T = TypeVar("T")


class BodyTooLarge(DeepaasLikeError):
    """The request body exceeds ``client-max-size``."""

    status = 413


class TooManyParts(DeepaasLikeError):
    """The form has more parts (multipart) or fields (urlencoded) than ``max-form-parts``."""

    status = 413


class UnsupportedEncoding(DeepaasLikeError):
    """The body's ``Content-Encoding`` is none the server decodes (see :data:`DECODED_CODINGS`).

    RFC 9110 section 15.5.16: 415, with ``Accept-Encoding`` naming the codings the server
    does decode (section 12.5.3).
    """

    status = 415
    headers = {hdrs.ACCEPT_ENCODING: "gzip, deflate, br, zstd"}


class UnreadableBody(InvalidArguments):
    """The body cannot be decoded as its headers say; the connection closes after the answer."""

    close_connection = True


class BodyTimeout(DeepaasLikeError):
    """The client stopped sending the request body for ``body-timeout`` seconds."""

    status = 408


class _Parser(AIOHTTPParser):
    DEFAULT_UNKNOWN_BY_LOCATION = {**AIOHTTPParser.DEFAULT_UNKNOWN_BY_LOCATION, "request": marshmallow.EXCLUDE}

    def handle_error(
        self, error: marshmallow.ValidationError, req: Any, schema: Any, *, error_status_code: Any, error_headers: Any
    ) -> Any:  # noqa: ARG002
        messages: Any = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        # webargs files messages under the location they came from; clients want the fields.
        if len(messages) == 1 and next(iter(messages)) in ("request", "query", "json", "form"):
            messages = next(iter(messages.values()))
        raise InvalidArguments(messages)


parser = _Parser()


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may send: ``max_size`` bytes of body (0: any), with pauses of at
    most ``body_timeout`` seconds (None: no limit), in a form of at most ``max_parts``
    parts or fields (0: any).
    """

    max_size: int = 0
    body_timeout: float | None = None
    max_parts: int = 0


#: Content codings of a request body that aiohttp decodes (``br`` with Brotli and ``zstd``
#: with backports.zstd, both dependencies: without them its HTTP parser answers a plain-text
#: 400 before any handler runs).
DECODED_CODINGS = ("identity", "gzip", "deflate", "br", "zstd")


async def read_arguments(request: web.Request, uploads: Uploads, limits: Limits) -> MultiDict | dict[str, Any]:
    """Collect the raw arguments of ``request``: query string plus body.

    Returns a MultiDict for query/form requests, a dict for JSON bodies. Raises
    :class:`InvalidArguments` (``{"_body": [...]}`` or ``{"<part>": [...]}``) for a body that
    cannot be read as its headers say (malformed, undecodable, nested too deeply, a JSON
    number that is NaN or infinite), :class:`UnsupportedEncoding` for a ``Content-Encoding``
    the server does not decode, and, past ``limits``, :class:`BodyTooLarge`,
    :class:`TooManyParts` and :class:`BodyTimeout`.
    """
    _check_content_encoding(request)
    raw: MultiDict = MultiDict(request.query)
    content_type = request.content_type
    try:
        if content_type == "multipart/form-data":
            await _read_multipart(request, raw, uploads, limits)
        elif content_type == "application/x-www-form-urlencoded":
            raw.extend(await _within(limits.body_timeout, _read_form(request, limits.max_parts)))
        elif (content_type == "application/json" or content_type.endswith("+json")) and request.can_read_body:
            body = _json_object(await _within(limits.body_timeout, request.read()))
            return {**{key: raw.getall(key) if len(raw.getall(key)) > 1 else raw[key] for key in raw}, **body}
    except UnicodeDecodeError as error:
        raise InvalidArguments(
            {"_body": [f"the body is not valid UTF-8: {error.reason} at byte {error.start}"]}
        ) from None
    except (RequestPayloadError, HttpProcessingError) as error:
        # e.g. a Content-Encoding the body is not in (a fake gzip). aiohttp keeps the error in
        # the body stream and would read it again after the answer, to drain the connection,
        # and log it as unhandled: mark the body as ended, and close the connection instead.
        request.content.feed_eof()
        raise UnreadableBody({"_body": [f"the body cannot be read: {_cause(error)}"]}) from None
    return raw


def _check_content_encoding(request: web.Request) -> None:
    """Raise :class:`UnsupportedEncoding` for a body in a coding aiohttp would pass on
    undecoded (it ignores codings it does not know, and lists of several)."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding and coding not in DECODED_CODINGS:
        raise UnsupportedEncoding(
            f"the body's Content-Encoding {coding!r} is not supported: send it unencoded, or in "
            f"{', '.join(DECODED_CODINGS[1:])} (one coding)"
        )


async def _read_form(request: web.Request, max_parts: int) -> Mapping[str, Any]:
    """An urlencoded form: aiohttp parses it, refusing more than ``max_parts`` fields
    (``client_max_fields``, which ``create_app`` sets to ``max-form-parts``)."""
    await request.read()  # past client_max_size: aiohttp's 413; kept for post() below
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise _too_many_parts(max_parts) from None


def _too_many_parts(max_parts: int) -> TooManyParts:
    return TooManyParts(f"the form has more than {max_parts} parts or fields, the limit of max-form-parts")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except RecursionError:
        raise InvalidArguments({"_body": [f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"]}) from None
    except ValueError as error:
        raise InvalidArguments({"_body": [f"invalid JSON: {error}"]}) from None
    if not isinstance(body, dict):
        raise InvalidArguments({"_body": ["the JSON body must be an object of arguments"]})
    depth, finite = _measure(body)
    if depth > MAX_JSON_DEPTH:
        # Deep values would recurse in validation, pickling and storage later on.
        raise InvalidArguments({"_body": [f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"]})
    if not finite:
        # Python reads NaN, Infinity and numbers past a float's range (1e999); stored, they
        # would make every listing of the job invalid JSON for strict parsers (JSON.parse).
        raise InvalidArguments(_not_finite(body))
    return body


def _measure(value: Any) -> tuple[int, bool]:
    """Nesting depth of a JSON value (a scalar is 0), and whether every number in it is
    finite; without recursion.
    """
    deepest, finite, pending = 0, True, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
            deepest = max(deepest, depth + 1)
        elif isinstance(item, float) and not math.isfinite(item):
            finite = False
    return deepest, finite


def _not_finite(body: dict[str, Any]) -> dict[str, list[str]]:
    """``{"<argument>": ["... is NaN ..."]}`` for the first argument of ``body`` holding a
    number that is not finite, naming where in it (``["a"][0]``)."""
    pending: list[tuple[Any, str, str]] = [(value, name, "") for name, value in reversed(body.items())]
    while pending:
        item, name, where = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            number = json.dumps(item)  # NaN, Infinity or -Infinity, as Python's JSON writes it
            return {name: [f"{where or 'the value'} is {number}: JSON numbers must be finite"]}
        if isinstance(item, dict):
            pending.extend((child, name, f"{where}[{json.dumps(key)}]") for key, child in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend((child, name, f"{where}[{index}]") for index, child in reversed(list(enumerate(item))))
    return {"_body": ["a number is not finite"]}  # not reached: _measure found one


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


def _malformed(error: Exception) -> InvalidArguments:
    return InvalidArguments({"_body": [f"malformed multipart body: {error}"]})


async def _parts(request: web.Request, limits: Limits) -> AsyncIterator[BodyPartReader]:
    """The parts of a multipart body that may carry an argument: those at its top level.

    Every part counts against ``limits.max_parts`` (those of nested multiparts too, which
    are read and dropped): :class:`TooManyParts` as soon as one is past it. Each part
    yields to the event loop: aiohttp parses a part without waiting when it is buffered
    (the whole body may be), and a part costs 0.2 ms in aiohttp alone (its headers, its
    Content-Disposition twice) and 0.45 ms in all on 2 busy cores, so a body of 20,000
    one-byte parts held the loop for 7 to 11 s.
    """
    try:
        readers = [await request.multipart()]
    except (ValueError, AssertionError, HttpProcessingError) as error:
        raise _malformed(error) from error
    count = 0
    while readers:
        try:
            part = await _within(limits.body_timeout, readers[-1].next())
        except (ValueError, AssertionError, HttpProcessingError) as error:
            raise _malformed(error) from error
        if part is None:
            readers.pop()
            continue
        count += 1
        if limits.max_parts and count > limits.max_parts:
            raise _too_many_parts(limits.max_parts)
        await asyncio.sleep(0)
        if isinstance(part, MultipartReader):
            readers.append(part)
        elif len(readers) == 1:
            yield part


async def _read_multipart(request: web.Request, raw: MultiDict, uploads: Uploads, limits: Limits) -> None:
    received = 0
    async for part in _parts(request, limits):
        if part.name is None:
            continue  # an unnamed part carries no argument
        if part.filename is None:
            text, size = await _read_field(part, limits.body_timeout)
            received += size
            _check_size(received, limits.max_size)
            raw.add(part.name, text)
            continue
        path = uploads.new_path(part.filename)
        with open(path, "wb") as handle:
            while chunk := await _within(limits.body_timeout, part.read_chunk(_CHUNK)):
                received += len(chunk)
                _check_size(received, limits.max_size)
                handle.write(chunk)
        content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
        raw.add(part.name, UploadedFile(part.name, path, content_type, part.filename))


async def _read_field(part: BodyPartReader, body_timeout: float | None) -> tuple[str, int]:
    """A form field's value as text, and its size in bytes (decoded). Raises
    :class:`InvalidArguments` naming the part when it cannot be decoded as its headers say.
    """
    assert part.name is not None
    try:
        data = await _within(body_timeout, part.read())
        _check_base64(part, data)
        value = bytearray()
        async for chunk in part.decode_iter(data):
            value.extend(chunk)
        return value.decode(part.get_charset(default="utf-8"), errors="replace"), len(value)
    except LookupError as error:  # an unknown charset
        raise InvalidArguments({part.name: [f"cannot decode the part: {error}"]}) from None
    except (ValueError, RuntimeError) as error:  # unknown transfer encoding, bad compressed data
        raise InvalidArguments({part.name: [f"cannot decode the part: {type(error).__name__}: {error}"]}) from None


def _check_base64(part: BodyPartReader, data: bytes | bytearray) -> None:
    """Refuse a ``Content-Transfer-Encoding: base64`` part that is not base64: aiohttp's
    decoder drops what is not base64 (``!!!`` decodes to nothing); line breaks are allowed,
    as MIME writes base64 in lines of 76 (RFC 2045 section 6.8)."""
    if part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").strip().lower() != "base64":
        return
    try:
        base64.b64decode(b"".join(bytes(data).split()), validate=True)
    except binascii.Error as error:
        message = f"cannot decode the part: it is not valid base64 ({error})"
        raise InvalidArguments({str(part.name): [message]}) from None


def _check_size(received: int, max_size: int) -> None:
    if max_size and received > max_size:
        raise BodyTooLarge(f"request body exceeds the limit of {max_size} bytes (client-max-size)")


def header_located(field: marshmallow.fields.Field) -> bool:
    """True for an argument declared DEEPaaS-style to come from a header:
    ``location="headers"`` or ``metadata={"location": "headers"}``.
    """
    return field.metadata.get("location") in ("headers", "header")


async def decode_arguments(
    request: web.Request, schema: type[marshmallow.Schema], uploads: Uploads, limits: Limits, negotiated: bool = False
) -> dict[str, Any]:
    """The raw arguments of ``request`` for a call (see :class:`~deepaas_like.serving.calls.Call`):
    query string and body (uploads into ``uploads``), repeated form fields as lists for the
    ``schema``'s list fields, and the arguments declared to come from a header read from the
    request header of that name (``_`` may be written ``-``) when the query and body lack
    them; ``accept`` never when ``negotiated`` (the call service chooses it from the
    ``Accept`` header). Raises what :func:`read_arguments` raises.
    """
    raw = await read_arguments(request, uploads, limits)
    instance = schemas.instance(schema)
    for name, field in instance.fields.items():
        if name not in raw and header_located(field) and not (negotiated and name == "accept"):
            value = request.headers.get(name, request.headers.get(name.replace("_", "-")))
            if value is not None:
                raw[name] = value
    if isinstance(raw, MultiDict):
        return dict(MultiDictProxy(raw, instance))
    return raw


async def listing_arguments(request: web.Request) -> dict[str, Any]:
    """The query string of a job listing; raises :class:`InvalidArguments`."""
    return await parser.parse(ListingArgs(), request, location="query", unknown=marshmallow.EXCLUDE)
