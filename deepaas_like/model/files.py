"""Files that travel between a request and a plugin, with the field names DEEPaaS V2 uses.

This module imports nothing beyond the standard library, so that the server can check its
own dependencies before importing marshmallow or webargs.
"""

from __future__ import annotations

import typing

__all__ = ["ReturnedFile", "UploadedFile"]


class UploadedFile(typing.NamedTuple):
    """A file uploaded with a request, as DEEPaaS V2 hands it to plugins.

    ``name`` is the form field, ``filename`` a path on the server's disk (deleted when the
    call ends), ``content_type`` the media type the client sent, ``original_filename`` the
    client's file name (never used as a path). Field names and order are DEEPaaS 2.6's
    (``deepaas.model.v2.wrapper.UploadedFile``).
    """

    name: str
    filename: str
    content_type: str
    original_filename: str


class ReturnedFile(typing.NamedTuple):
    """A file a plugin returns from ``predict`` (DEEPaaS 2.6's ``ReturnedFile``):
    ``filename`` is a path on disk; ``content_type``, when set, is the response's media type.
    """

    name: str
    filename: str
    content_type: str
    original_filename: str
