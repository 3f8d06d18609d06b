"""Binary results of asynchronous predictions, as files in the results directory: one
folder per job, ``<results dir>/<uuid>/prediction``. They never go through a SQL row and
are served by streaming the file. Also the removal of a job's upload folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path

from deepaas_like.exceptions import StartupError
from deepaas_like.results import FileResult

__all__ = ["ResultFiles", "remove_uploads"]

_NAME = "prediction"  # the file's name; a download is offered as prediction.<extension>


class ResultFiles:
    """The results directory ``directory`` (created if missing)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def check(self) -> None:
        """Create the directory and check it can be written; raises :class:`StartupError`."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # A name of its own: servers sharing the directory check it at the same time.
            with tempfile.TemporaryFile(prefix=".deepaas-like-check-", dir=self.directory):
                pass
        except OSError as error:
            raise StartupError(
                f"cannot write in the results directory {self.directory} (--results-dir): {error.strerror or error}"
            ) from error

    def path(self, name: str) -> Path:
        """The file of a stored result (``name`` as :meth:`save` returned it)."""
        return self.directory / name

    async def save(self, uuid: str, result: bytes | FileResult) -> str:
        """Write ``result`` (the bytes, or the file a plugin returned, which is copied, or
        moved when it is a temporary file of the worker's) as job ``uuid``'s result, in a
        thread; returns its name relative to the directory. Raises ``OSError``.
        """
        return await asyncio.to_thread(self._save, uuid, result)

    def _save(self, uuid: str, result: bytes | FileResult) -> str:
        folder = self.directory / uuid
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{_NAME}.partial"
        if isinstance(result, bytes):
            partial.write_bytes(result)
        elif result.temporary:
            # A file the worker wrote for this result only: take it over.
            shutil.move(result.path, partial)
        else:
            shutil.copyfile(result.path, partial)  # the plugin's own file stays where it is
        os.replace(partial, folder / _NAME)  # a reader sees a whole file or none
        return f"{uuid}/{_NAME}"

    def remove(self, uuid: str) -> None:
        """Delete job ``uuid``'s stored result, if it has one."""
        if re.fullmatch(r"[0-9a-f]{32}", uuid):  # never anything but one job's folder
            shutil.rmtree(self.directory / uuid, ignore_errors=True)


def remove_uploads(directory: str | None) -> None:
    """Delete a job's upload folder ``directory`` (None: it has none), as the job ends."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
