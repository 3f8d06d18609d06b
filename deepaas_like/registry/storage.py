"""Where model versions are stored: a directory per version under the model store, which is
a local path or any fsspec URL (``s3://bucket/models``, a shared mount), so that several
servers, or Ray workers on other hosts, read the same versions.

A version appears whole or not at all: :func:`publish` has the plugin's ``save`` write into
a fresh directory, then renames it into place (on object stores, where nothing renames a
tree atomically, the version's record, written after, is what makes it exist). A ``save``
that wrote outside that directory, into the store, makes no version: plugins are trusted
code, this catches their mistakes, not malice (there is no sandbox).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable

import fsspec
from fsspec.implementations.local import LocalFileSystem

from deepaas_like.exceptions import StartupError

__all__ = ["ModelStore", "PARTIAL", "SavedOutside", "local_copy", "publish"]

#: Prefix of the directories a version is written into before it is renamed into place.
PARTIAL = ".partial-"
#: A version's directory in its model's folder is named by its training's uuid.
_VERSION_NAME = re.compile(r"[0-9a-f]{32}")


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def _local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def publish(url: str, write: Callable[[str], None]) -> None:
    """Make the version directory ``url``: ``write(path)`` fills a fresh local directory,
    which then appears at ``url`` under its final name, whole. On any failure (``write``
    raises, the disk is full, ``write`` wrote outside ``path``: :class:`SavedOutside`)
    nothing is left at ``url`` nor beside it, and the error propagates. Runs where the
    plugin runs (a worker).
    """
    fs, path = _filesystem(url)
    if _local(fs):
        _publish_locally(path.rstrip("/"), write)
    else:
        _publish_remotely(fs, path.rstrip("/"), write)


def _publish_locally(path: str, write: Callable[[str], None]) -> None:
    """:func:`publish` into a local store: written beside ``path``, then renamed. The
    store is two levels up (``{store}/{model}/{job}``): files that appear in it outside
    version directories while ``write`` runs are its doing.
    """
    parent = os.path.dirname(path)
    store = os.path.dirname(parent)
    os.makedirs(parent, exist_ok=True)
    before = _outside_versions(store)
    partial = tempfile.mkdtemp(prefix=PARTIAL, dir=parent)
    try:
        write(partial)
        after = _outside_versions(store)
        _saved_inside([name for name, seen in after.items() if before.get(name) != seen], f"in the model store {store}")
        os.rename(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _publish_remotely(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[str], None]) -> None:
    """:func:`publish` into an object store: written into a local directory of its own
    (beside it, nothing else: what appears there was written outside it), uploaded under a
    partial name, then moved into place.
    """
    scratch = tempfile.mkdtemp(prefix="deepaas-like-version-")
    local = os.path.join(scratch, "version")
    remote_partial = f"{os.path.dirname(path)}/{PARTIAL}{os.path.basename(scratch)}"
    try:
        os.mkdir(local)
        write(local)
        _saved_inside(list(set(os.listdir(scratch)) - {"version"}), f"beside it in {scratch}")
        fs.put(local + "/", remote_partial, recursive=True)
        fs.mv(remote_partial, path, recursive=True)
    except BaseException:
        try:
            if fs.exists(remote_partial):
                fs.rm(remote_partial, recursive=True)
        except Exception:  # noqa: BLE001, S110 - the error that matters is the one propagating
            pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class SavedOutside(Exception):
    """A plugin's ``save`` wrote files outside the version directory it was given."""


def _saved_inside(strays: list[str], where: str) -> None:
    """Raise :class:`SavedOutside` naming ``strays`` (at most 10 of them), the files a
    ``save`` wrote outside its version directory, ``where`` they are.
    """
    if not strays:
        return
    strays = sorted(strays)
    shown = ", ".join(strays[:10]) + (f" and {len(strays) - 10} more" if len(strays) > 10 else "")
    raise SavedOutside(
        f"save() wrote outside its version directory, {where}: {shown} (left as they are; "
        "save(path) must write under path only)"
    )


def _outside_versions(store: str) -> dict[str, tuple[int, int]]:
    """The files of the local ``store`` outside version directories (``{model}/{job}``,
    and those being written, ``{model}/.partial-*``): relative path -> (mtime in ns,
    size). The server writes nothing else there, so the walk is short.
    """
    files: dict[str, tuple[int, int]] = {}
    for folder, dirs, names in os.walk(store):
        relative = os.path.relpath(folder, store)
        if relative != "." and os.sep not in relative:  # a model's folder: its versions are not walked
            dirs[:] = [name for name in dirs if not (_VERSION_NAME.fullmatch(name) or name.startswith(PARTIAL))]
        # os.walk does not follow a link to a directory: it counts as a file here.
        for name in [*names, *(name for name in dirs if os.path.islink(os.path.join(folder, name)))]:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue  # removed meanwhile
            files[os.path.normpath(os.path.join(relative, name))] = (stat.st_mtime_ns, stat.st_size)
    return files


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
