"""Arguments to request bodies, and answers to Python values.

A call's arguments go as JSON when none is a file, else as ``multipart/form-data`` (files
as parts of their own, the other arguments as form fields), as the server's OpenAPI
document describes each model's request body. An answer is decoded by its media type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import mimetypes
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["FileArgument", "Form", "body_of", "decode_answer", "is_file", "is_json"]

#: What a file argument may be: a path, the file's content, or a file opened in binary mode.
FileArgument = Path | bytes | bytearray | memoryview | IO[bytes]

_ATTACHMENT = re.compile(r'filename="?([^";]+)"?')


def is_file(value: object) -> bool:
    """Whether ``value`` is sent as a file: a :class:`pathlib.Path`, bytes, or an object with
    ``read`` (a file opened in binary mode). A ``str`` is a string, never a file name.
    """
    return isinstance(value, (Path, bytes, bytearray, memoryview)) or hasattr(value, "read")


def is_json(media_type: str) -> bool:
    """Whether ``media_type`` (a ``Content-Type`` value) is JSON: ``application/json`` or a
    ``+json`` type (RFC 6839)."""
    essence = media_type.split(";")[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")


def _field_text(value: object) -> str:
    """A form field's text: booleans as ``true``/``false``, lists and objects as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Form:
    """A ``multipart/form-data`` body that can be sent again (a retry): paths are opened at
    each :meth:`opened`; file objects are sent whole, from their start, at each try (httpx
    seeks them to 0).
    """

    fields: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, FileArgument], ...]

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> Form:
        """The form of ``arguments`` (name -> value; lists and tuples of plain values become
        repeated fields). Raises ``TypeError`` for a file opened in text mode.
        """
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileArgument]] = []
        for name, value in arguments.items():
            if is_file(value):
                if isinstance(value, io.TextIOBase):
                    raise TypeError(f"argument {name!r}: open the file in binary mode ('rb')")
                files.append((name, value))
            elif isinstance(value, (list, tuple)):
                fields.extend((name, _field_text(item)) for item in value)
            else:
                fields.append((name, _field_text(value)))
        return cls(tuple(fields), tuple(files))

    @contextlib.contextmanager
    def opened(self) -> Iterator[dict[str, Any]]:
        """``data=`` and ``files=`` for httpx, with paths open until the request is sent;
        each file part named as the file (a file object's ``name``; else the argument's) and
        typed by that name's extension.
        """
        with contextlib.ExitStack() as stack:
            files = []
            for name, value in self.files:
                content: Any = value
                filename = name
                if isinstance(value, Path):
                    filename = value.name
                    content = stack.enter_context(value.open("rb"))
                elif isinstance(value, (bytearray, memoryview)):
                    content = bytes(value)
                elif not isinstance(value, bytes):
                    filename = os.path.basename(str(getattr(value, "name", "") or "")) or name
                media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                files.append((name, (filename, content, media_type)))
            data: dict[str, list[str]] = {}
            for field, text in self.fields:
                data.setdefault(field, []).append(text)
            yield {"data": {key: texts[0] if len(texts) == 1 else texts for key, texts in data.items()}, "files": files}


def body_of(arguments: Mapping[str, Any]) -> tuple[Any, Form | None]:
    """``(json, form)``: the JSON body when no argument is a file, else the form. Arguments
    that are None are left out (the server's default applies).
    """
    given = {name: value for name, value in arguments.items() if value is not None}
    if any(is_file(value) for value in given.values()):
        return None, Form.of(given)
    return given, None


def _load_image(content: bytes) -> Any:
    """A ``PIL.Image.Image`` of ``content`` (loaded, so the bytes may go), or ``content``
    itself without Pillow or when Pillow cannot read it.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        return content
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except (UnidentifiedImageError, OSError):
        return content
    return image


def _target(output: Path, response: httpx.Response) -> Path:
    """Where to write an answer: ``output``, or the file name the server suggests
    (``Content-Disposition``) inside ``output`` when that is a directory."""
    if not output.is_dir():
        return output
    match = _ATTACHMENT.search(response.headers.get("Content-Disposition", ""))
    name = os.path.basename(match.group(1)) if match else ""
    return output / (name or "prediction.bin")


def decode_answer(response: httpx.Response, output: str | os.PathLike[str] | None = None) -> Any:
    """The answer's body as a Python value: JSON parsed; ``image/*`` a ``PIL.Image.Image``
    when Pillow is installed (it is not a dependency of deepaas_like), else bytes; any other
    media type bytes. With ``output`` (a file path, or a directory for the server's file
    name) the body is written there instead and the :class:`pathlib.Path` written returned.
    """
    if output is not None:
        target = _target(Path(output), response)
        target.write_bytes(response.content)
        return target
    media_type = response.headers.get("Content-Type", "application/octet-stream")
    if is_json(media_type):
        return response.json()
    if media_type.lower().startswith("image/"):
        return _load_image(response.content)
    return response.content
