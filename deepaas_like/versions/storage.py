"""Where model versions are stored: a directory per version under the model store, which is
a local path or any fsspec URL (``s3://bucket/models``, a shared mount), so that several
servers, or Ray workers on other hosts, read the same versions.

A version appears whole or not at all: :func:`publish` has the plugin's ``save`` write into
a fresh directory, then renames it into place (on object stores, where nothing renames a
tree atomically, the version's record, written after, is what makes it exist).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable

import fsspec
from fsspec.implementations.local import LocalFileSystem

from deepaas_like.exceptions import StartupError

#: Prefix of the directories a version is written into before it is renamed into place.
PARTIAL = ".partial-"


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def _local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def publish(url: str, write: Callable[[str], None]) -> None:
    """Make the version directory ``url``: ``write(path)`` fills a fresh local directory,
    which then appears at ``url`` under its final name, whole. On any failure (``write``
    raises, the disk is full) nothing is left at ``url`` nor beside it, and the error
    propagates. Runs where the plugin runs (a worker).
    """
    fs, path = _filesystem(url)
    if _local(fs):
        parent = os.path.dirname(path.rstrip("/"))
        os.makedirs(parent, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=PARTIAL, dir=parent)
        try:
            write(partial)
            os.rename(partial, path)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return
    local = tempfile.mkdtemp(prefix="deepaas-like-version-")
    remote_partial = f"{os.path.dirname(path.rstrip('/'))}/{PARTIAL}{os.path.basename(local)}"
    try:
        write(local)
        fs.put(local.rstrip("/") + "/", remote_partial, recursive=True)
        fs.mv(remote_partial, path, recursive=True)
    except BaseException:
        try:
            if fs.exists(remote_partial):
                fs.rm(remote_partial, recursive=True)
        except Exception:  # noqa: BLE001, S110 - the error that matters is the one propagating
            pass
        raise
    finally:
        shutil.rmtree(local, ignore_errors=True)


def local_copy(url: str, into: str | None = None) -> str:
    """A local directory holding the version ``url``: the directory itself on a local
    store, else a copy downloaded into ``into`` (default: a temporary directory removed
    when the process exits). Raises ``FileNotFoundError`` naming ``url`` when it is missing.
    """
    fs, path = _filesystem(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"the version directory {url} is missing")
    if _local(fs):
        return path
    if into is None:
        into = tempfile.mkdtemp(prefix="deepaas-like-version-")
        atexit.register(shutil.rmtree, into, True)
    fs.get(path.rstrip("/") + "/", into.rstrip("/") + "/", recursive=True)
    return into


class ModelStore:
    """The model store at ``url`` (a local directory or an fsspec URL): the version of
    ``model`` made by training ``job`` lives at ``{url}/{model}/{job}``.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @functools.cached_property
    def _location(self) -> tuple[fsspec.AbstractFileSystem, str]:
        # Made on first use, not here: some filesystems connect as they are made (ftp://),
        # and a server whose plugins make no versions never uses its store.
        return _filesystem(self.url)

    @property
    def _fs(self) -> fsspec.AbstractFileSystem:
        return self._location[0]

    @property
    def _root(self) -> str:
        return self._location[1]

    def location(self, model: str, job: str) -> str:
        """Where the version made by training ``job`` goes, relative to the store."""
        return f"{model}/{job}"

    def url_of(self, location: str) -> str:
        """The full URL (or path) of a version's directory."""
        return f"{self.url}/{location}"

    def path_of(self, location: str) -> str:
        """A version directory's path on the store's filesystem (absolute for a local store)."""
        return f"{self._root}/{location}"

    def check(self) -> None:
        """Make sure versions can be written into the store: a local one is created if
        missing, into another a file is written and removed. Raises :class:`StartupError`
        naming the store, its option (``--model-store``) and the reason.
        """
        try:
            if _local(self._fs):
                os.makedirs(self._root, exist_ok=True)
                if not os.access(self._root, os.W_OK | os.X_OK):
                    raise PermissionError(f"{self._root} is not writable")
            else:
                # Reaching the store is not enough: an archive (zip://) is read-only.
                probe = f"{self._root}/.deepaas-like-probe-{uuid.uuid4().hex}"
                self._fs.pipe_file(probe, b"")
                self._fs.rm_file(probe)
        except Exception as error:  # noqa: BLE001 - any failure here means: no model store
            raise StartupError(
                f"cannot use the model store {self.url} (--model-store): versions cannot be written there: "
                f"{type(error).__name__}: {error}"
            ) from error

    def exists(self, location: str) -> bool:
        """Whether a version's directory is there."""
        return bool(self._fs.isdir(f"{self._root}/{location}"))

    def remove(self, location: str) -> None:
        """Delete a version's directory (nothing happens if it is missing)."""
        path = f"{self._root}/{location}"
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)
