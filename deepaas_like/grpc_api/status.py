"""The gRPC status of an error, in one table: each project exception carries an HTTP status,
and that status maps to a gRPC code as Google's ``google.rpc.Code`` documents the pairs.

Invalid arguments (422) carry their field messages as a ``google.rpc.BadRequest`` in the
rich error details (``grpc-status-details-bin``: ``grpc_status.rpc_status.from_call`` reads
them); answers that HTTP sends with ``Retry-After`` carry a ``google.rpc.RetryInfo``.

Both travel in the trailing metadata, which grpcio clients refuse beyond 8 KiB by default
(``grpc.max_metadata_size``; from 8 to 16 KiB at random, above always, as
``RESOURCE_EXHAUSTED``): what an error echoes of a request is cut to fit (see the limits).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments

__all__ = [
    "CODES",
    "MAX_MESSAGE_BYTES",
    "MAX_VIOLATIONS_BYTES",
    "MAX_VIOLATION_BYTES",
    "bounded",
    "code_of",
    "status_of",
]

#: HTTP status of a project exception -> gRPC code.
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    # An endpoint switched off by configuration: "not supported/enabled in this service".
    402: grpc.StatusCode.UNIMPLEMENTED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


#: Bytes of UTF-8 kept of a status message; the message travels twice, percent-encoded in
#: ``grpc-message`` (up to 3 bytes for each) and in the details, base64-encoded (4 for 3).
MAX_MESSAGE_BYTES = 1024
#: Bytes of UTF-8 kept of a field violation's field and description.
MAX_VIOLATION_BYTES = 256
#: Bytes of field violations sent (as serialized; base64 adds a third): the rest are counted.
MAX_VIOLATIONS_BYTES = 2048


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (never inside a character), saying
    how long it was when it is cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    note = f"... ({len(text)} characters)"
    return encoded[: max(limit - len(note.encode()), 0)].decode(errors="ignore") + note


def code_of(error: DeepaasLikeError) -> grpc.StatusCode:
    """The gRPC code of ``error``: :data:`CODES` of its HTTP status, else INTERNAL (5xx) or
    FAILED_PRECONDITION (4xx)."""
    default = grpc.StatusCode.INTERNAL if error.status >= 500 else grpc.StatusCode.FAILED_PRECONDITION
    return CODES.get(error.status, default)


def status_of(error: DeepaasLikeError) -> grpc.Status:
    """The status a call ends with on ``error``: its code, its message, and the details."""
    code = code_of(error)
    details = []
    if isinstance(error, InvalidArguments):
        details.append(_packed(_bad_request(_violations(error.messages))))
    retry_after = error.headers.get("Retry-After")
    if retry_after and retry_after.isdigit():
        details.append(
            _packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after))))
        )
    message = bounded(error.message, MAX_MESSAGE_BYTES)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))


def _bad_request(violations: list[tuple[str, str]]) -> error_details_pb2.BadRequest:
    """The violations, bounded: each to :data:`MAX_VIOLATION_BYTES`, all to
    :data:`MAX_VIOLATIONS_BYTES`, and a last one counting those left out."""
    bad_request = error_details_pb2.BadRequest()
    for index, (field, text) in enumerate(violations):
        bad_request.field_violations.add(
            field=bounded(field, MAX_VIOLATION_BYTES), description=bounded(text, MAX_VIOLATION_BYTES)
        )
        if bad_request.ByteSize() > MAX_VIOLATIONS_BYTES:
            del bad_request.field_violations[-1]
            left = len(violations) - index
            bad_request.field_violations.add(description=f"{left} more violations are left out")
            break
    return bad_request


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _violations(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"field": ["message", ...]}`` (nested for nested fields: ``{"a": {"b": [...]}}``, or
    ``{0: [...]}`` for list items) as (``a.b``, message) pairs."""
    found: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            found += _violations(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(messages, (list, tuple)):
        for item in messages:
            found += _violations(item, prefix)
    else:
        found.append((prefix, str(messages)))
    return found
