"""Media types of prediction results: one rule, used by synchronous predictions, prediction
jobs and the CLI alike.

Media types are compared as RFC 9110 section 8.3.1 describes them (``type/subtype``, case
insensitive, parameters aside); a ``*`` on either side is a wildcard.
"""

from __future__ import annotations

import mimetypes

import filetype

__all__ = ["JSON", "OCTET_STREAM", "compatible", "essence", "is_concrete", "is_json", "result_media_type", "sniff"]

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


def essence(media_type: str) -> str:
    """``type/subtype`` in lower case, without parameters: ``"Image/PNG; q=1"`` -> ``"image/png"``."""
    return media_type.split(";", 1)[0].strip().lower()


def is_json(media_type: str | None) -> bool:
    """True for ``application/json`` and ``+json`` types (and None: no preference)."""
    if media_type is None:
        return True
    base = essence(media_type)
    return base == JSON or base.endswith("+json")


def is_concrete(media_type: str) -> bool:
    """False for ranges such as ``image/*`` and ``*/*``."""
    return "*" not in essence(media_type)


def compatible(first: str, second: str) -> bool:
    """Whether two media types or ranges can name the same type: ``image/*`` and
    ``image/png`` are, ``image/*`` and ``application/zip`` are not.
    """
    kind_a, _, sub_a = essence(first).partition("/")
    kind_b, _, sub_b = essence(second).partition("/")
    return _same_or_wildcard(kind_a, kind_b) and _same_or_wildcard(sub_a, sub_b)


def _same_or_wildcard(first: str, second: str) -> bool:
    return first == second or "*" in (first, second)


def sniff(data: bytes | str) -> str | None:
    """The media type the content's magic numbers show (``data``: the bytes, or a path to a
    file whose first 8 KiB are read), or None. Uses the ``filetype`` library's signatures.
    """
    try:
        return filetype.guess_mime(data)
    except (OSError, TypeError):
        return None


def result_media_type(result: bytes | str, chosen: str | None, declared: str | None = None) -> str:
    """The concrete media type a binary prediction is sent with.

    ``result`` is the bytes, or the path of the file, the plugin returned; ``chosen`` the
    media type negotiated for the call (the ``accept`` choice, possibly a range such as
    ``image/*``); ``declared`` the type the plugin gave the file itself (DEEPaaS's
    ``ReturnedFile.content_type``). In order: a declared concrete type; a chosen concrete
    non-JSON type; the type the content's magic numbers show, or (for a file) its name's
    extension, when it fits the chosen range; ``application/octet-stream``.
    """
    if declared and is_concrete(declared):
        return declared
    if chosen and is_concrete(chosen) and not is_json(chosen):
        return chosen
    wanted = chosen if chosen and not is_json(chosen) else "*/*"
    guesses = [sniff(result)]
    if isinstance(result, str):
        guesses.append(mimetypes.guess_type(result)[0])
    return next((guess for guess in guesses if guess and compatible(guess, wanted)), OCTET_STREAM)
