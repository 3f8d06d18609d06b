"""Plugin argument handling: uploaded files and argument schemas.

File arguments are declared the DEEPaaS way, ``fields.Field(type="file", location="form")``
or ``fields.Raw(metadata={"type": "file"})``; they reach the plugin as :class:`UploadedFile`.
"""

from __future__ import annotations

import typing


class UploadedFile(typing.NamedTuple):
    """A file uploaded with a request, as DEEPaaS V2 hands it to plugins.

    ``name`` is the form field, ``filename`` a path on the server's disk (deleted when the
    call ends), ``content_type`` the media type the client sent, ``original_filename`` the
    client's file name (never used as a path).
    """

    name: str
    filename: str
    content_type: str
    original_filename: str
