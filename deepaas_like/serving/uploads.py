"""Uploaded files: the folder of one request's uploads, who owns it, and the clean-up of
folders that killed servers left behind.

A request's uploads belong to the request while it is handled (the folder is deleted when
the handler leaves its ``with Uploads(...)`` block) unless it hands them to a job
(:meth:`Uploads.take`); the job then deletes them when it ends.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
import tempfile
from types import TracebackType

from deepaas_like.database import database_identity
from deepaas_like.exceptions import StartupError

__all__ = [
    "NO_DATABASE",
    "UPLOAD_PREFIX",
    "Uploads",
    "check_upload_dir",
    "remove_orphaned_uploads",
]


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
        raise StartupError(
            f"cannot write in the upload directory {directory} (--upload-dir): {error.strerror or error}"
        ) from error


UPLOAD_PREFIX = "deepaas-like-upload-"
# deepaas-like-upload-<database tag>-<host tag>-<pid>-<random>: whose folder it is.
_UPLOAD_FOLDER = re.compile(r"^deepaas-like-upload-([0-9a-f]{8})-([0-9a-f]{8})-([0-9]+)-")


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


#: The owner tag of uploads of a server without a job database (the CLI's local mode).
NO_DATABASE = database_identity(None)


@functools.lru_cache(maxsize=8)
def _folder_prefix(owner: str, pid: int) -> str:
    return f"{UPLOAD_PREFIX}{owner}-{_tag(socket.gethostname())}-{pid}-"


class Uploads:
    """The temporary directory holding one request's uploaded files.

    Its name says whose it is, ``deepaas-like-upload-<database>-<host>-<pid>-<random>``
    (tags are hashes of the job database's URL, ``owner`` from :func:`~deepaas_like.database.database_identity`, and of
    the host name), so that a server starting later can tell an orphan, whose server died,
    from a live sibling's upload (see :func:`remove_orphaned_uploads`).
    """

    def __init__(self, parent: str | None = None, owner: str = NO_DATABASE) -> None:
        self.directory: str | None = None
        self._parent = parent
        self._owner = owner

    def new_path(self, original_filename: str) -> str:
        """A fresh path for an upload; only the original name's extension is kept."""
        if self.directory is None:
            prefix = _folder_prefix(self._owner, os.getpid())
            self.directory = tempfile.mkdtemp(prefix=prefix, dir=self._parent)
        suffix = os.path.splitext(os.path.basename(original_filename or ""))[1]
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 16 else ""
        handle, path = tempfile.mkstemp(dir=self.directory, suffix=suffix)
        os.close(handle)
        return path

    def take(self) -> str | None:
        """Hand the folder (None: nothing was uploaded) over to a new owner, a job, which
        deletes it when it ends; the request no longer does.
        """
        directory, self.directory = self.directory, None
        return directory

    def cleanup(self) -> None:
        """Delete every upload still owned by the request."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "Uploads":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.cleanup()


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
    mine = database_identity(database_url)
    here = _tag(socket.gethostname())
    live_tags = {(_tag(host), pid) for host, pid in live}
    owned = {os.path.normpath(path) for path in owned}
    removed: list[str] = []
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
