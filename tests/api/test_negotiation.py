"""Accept header parsing and media-type choice (RFC 9110, section 12.5.1). The module moved
out of api/ to deepaas_like/negotiation.py (issue 27): the call service, under every front,
chooses ``accept``; the tests stay with the HTTP ones, whose header it reads.
"""

import pytest

from deepaas_like.media import compatible, result_media_type
from deepaas_like.negotiation import best_match, choose_media_type, is_json, parse_accept, quality

OFFERED = ["application/json", "image/png", "application/zip"]


def test_parse_accept_reads_q_values_and_skips_garbage():
    ranges = parse_accept("image/png;q=0.5, text/*;level=1, bogus, */*;q=abc")
    assert [(r.type, r.subtype, r.q) for r in ranges] == [("image", "png", 0.5), ("text", "*", 1.0), ("*", "*", 0.0)]


def test_most_specific_range_sets_the_quality():
    ranges = parse_accept("image/*;q=0.9, image/png;q=0.1")
    assert quality(ranges, "image/png") == 0.1
    assert quality(ranges, "image/jpeg") == 0.9
    assert quality(ranges, "application/json") == 0.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("image/png", "image/png"),
        ("application/zip;q=0.9, image/png;q=0.8", "application/zip"),
        ("*/*", "application/json"),
        ("image/*, application/json;q=0.5", "image/png"),
        ("image/png;q=0, */*;q=0.1", "application/json"),
        ("APPLICATION/ZIP", "application/zip"),
        ("text/csv", None),
        ("*/*;q=0", None),
    ],
)
def test_best_match(header, expected):
    assert best_match(header, OFFERED) == expected


def test_choose_media_type_precedence():
    assert choose_media_type("image/png", "application/zip", OFFERED, "application/json") == "application/zip"
    assert choose_media_type("image/png", None, OFFERED, "application/json") == "image/png"
    assert choose_media_type(None, None, OFFERED, "application/zip") == "application/zip"
    assert choose_media_type("*/*", None, OFFERED, None) == "application/json"
    assert choose_media_type("text/csv", None, [], None) is None, "models without accept answer JSON"


def test_an_accept_header_that_matches_no_offer_gets_the_default_as_from_deepaas():
    assert choose_media_type("text/csv", None, OFFERED, None) == "application/json"
    assert choose_media_type("text/html", None, OFFERED, "application/zip") == "application/zip"


def test_an_offered_range_matches_a_concrete_request():
    offered = ["application/json", "image/*"]
    assert best_match("image/png", offered) == "image/*"
    assert choose_media_type("image/png", None, offered, "application/json") == "image/*"
    assert choose_media_type("video/mp4", None, offered, "application/json") == "application/json"
    assert compatible("image/*", "image/png") and compatible("*/*", "application/zip")
    assert not compatible("image/*", "application/zip") and not compatible("image/png", "image/jpeg")


def test_a_binary_result_gets_a_concrete_media_type():
    png = b"\x89PNG\r\n\x1a\n" + bytes(24)
    assert result_media_type(png, "image/*") == "image/png", "a range is made concrete from the bytes"
    assert result_media_type(png, None) == "image/png", "no accept at all: sniffed too"
    assert result_media_type(png, "application/zip") == "application/zip", "a concrete choice is kept"
    assert result_media_type(b"PK\x03\x04" + bytes(26), "image/*") == "application/octet-stream", "not an image"
    assert result_media_type(png, "image/*", declared="image/x-custom") == "image/x-custom"
    assert result_media_type(b"plain text", "*/*") == "application/octet-stream"


def test_is_json():
    assert is_json("application/json") and is_json("application/problem+json; charset=utf-8") and is_json(None)
    assert not is_json("image/png")
