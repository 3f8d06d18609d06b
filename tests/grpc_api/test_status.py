"""The gRPC status of an error: its code, its message and details, bounded so that the
trailing metadata stays under what grpcio clients accept (8 KiB by default)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from deepaas_like.exceptions import InvalidArguments, JobNotFound
from deepaas_like.grpc_api.status import MAX_MESSAGE_BYTES, bounded, status_of

#: grpcio's default limit of a call's metadata (grpc.max_metadata_size), in bytes.
CLIENT_LIMIT = 8192


def metadata_size(status: grpc.Status) -> int:
    """Bytes the status takes in the trailers: the message percent-encoded at worst, the
    details base64-encoded."""
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return 3 * len(status.details.encode()) + (len(details) + 2) // 3 * 4


def test_a_long_message_is_cut_and_says_how_long_it_was():
    message = f"no training {'a' * 100_000!r} for model 'demo'"
    status = status_of(JobNotFound(message))
    assert status.code == grpc.StatusCode.NOT_FOUND and status.details.startswith("no training 'aaa")
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    assert status.details.endswith(f"... ({len(message)} characters)")
    assert metadata_size(status) < CLIENT_LIMIT


def test_many_long_violations_are_cut_and_counted():
    messages = {f"field_{index}_{'x' * 1000}": ["é" * 5000] for index in range(10_000)}
    status = status_of(InvalidArguments(messages))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT and metadata_size(status) < CLIENT_LIMIT
    details = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert details.details[0].Unpack(bad_request)
    violations = bad_request.field_violations
    assert violations[0].field.startswith("field_0_xxx") and violations[0].description.startswith("éé")
    assert violations[-1].description == f"{10_000 - (len(violations) - 1)} more violations are left out"


def test_bounded_never_cuts_a_character_and_keeps_short_text():
    assert bounded("short", 10) == "short"
    cut = bounded("€" * 100, 64)
    assert len(cut.encode()) <= 64 and cut.startswith("€") and cut.endswith("(100 characters)")
