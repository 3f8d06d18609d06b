"""The Ray actor that runs a plugin (a *replica*): the Ray executor's worker.

It is the counterpart of :func:`deepaas_like.workers.process.serve`: it loads its plugin and
calls ``warm()`` once when Ray places it, then runs one call at a time with
:func:`~deepaas_like.workers.execution.execute`, so that every executor answers alike.

Nothing here may be a path on the server's disk: uploads arrive as :class:`Upload` (an
object in Ray's object store, written to a file on this node for the plugin) and binary
results leave as :class:`Blob` (bytes, or an array that Ray moves through its object store
without copying it into a pickle). This module imports ``ray``: only the driver process
(``ray_driver.py``) and Ray's own worker processes import it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy
import ray

from deepaas_like import logs, progress
from deepaas_like.model import deepaas_compat
from deepaas_like.model.files import UploadedFile
from deepaas_like.model.plugin import Plugin
from deepaas_like.results import FileResult
from deepaas_like.workers.base import Placement, WorkerOptions
from deepaas_like.workers.execution import execute, start_plugin
from deepaas_like.workers.protocol import BatchResult, Error, Failed, Outcome, Ready, Result

__all__ = ["BLOB_THRESHOLD", "Blob", "Replica", "Upload", "as_array", "file_data"]

#: Binary data larger than this (bytes) travels as an array: Ray keeps it out of the pickle
#: and maps it from its object store instead of copying it (as the process executor's
#: result files, see ``process.RESULT_FILE_THRESHOLD``).
BLOB_THRESHOLD = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Upload:
    """An uploaded file on its way to a replica: ``data`` is an object in the object store
    (bytes or a uint8 array); the other fields are :class:`UploadedFile`'s.
    """

    name: str
    data: Any
    content_type: str
    original_filename: str
    suffix: str


@dataclasses.dataclass(frozen=True)
class Blob:
    """A binary result on its way back: ``data`` is bytes, or a uint8 array for a large
    one; ``media_type`` the one the plugin declared for its file, if any.
    """

    data: Any
    media_type: str | None = None


def as_array(data: bytes | memoryview) -> Any:
    """``data`` as an array Ray moves through its object store without copying it into a
    pickle (bytes at or under :data:`BLOB_THRESHOLD` stay bytes).
    """
    if len(data) <= BLOB_THRESHOLD:
        return bytes(data)
    return numpy.frombuffer(data, dtype=numpy.uint8)


def file_data(path: str) -> Any:
    """A file's contents as :func:`as_array` gives them, mapped rather than read when large."""
    if os.path.getsize(path) <= BLOB_THRESHOLD:
        with open(path, "rb") as file:
            return file.read()
    return numpy.memmap(path, dtype=numpy.uint8, mode="r")


class Replica:
    """One plugin instance in a Ray actor. Its methods run one call at a time (``call``);
    ``progress`` and ``watch`` run beside it in a concurrency group of their own.
    """

    def __init__(self, name: str, namespace: str, options: WorkerOptions) -> None:
        if options.threads:
            for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[variable] = str(options.threads)
        logs.setup(options.debug, options.log_json)
        self.options = options
        self.plugin: Plugin | None = None
        self._reports: list[tuple[Any, ...]] = []
        self._collect = False
        self._lock = threading.Lock()
        context = ray.get_runtime_context()
        self.placement = Placement(context.get_node_id()[:8], tuple(str(gpu) for gpu in ray.get_gpu_ids()))
        try:
            deepaas_compat.install()
            plugin = start_plugin(name, namespace, options.warm, options.load_from)
            self._ready: Ready | Failed = Ready(plugin.describe())
            self.plugin = plugin
        except BaseException as error:  # noqa: BLE001 - reported by ready(); the driver removes us
            self._ready = Failed(f"{type(error).__name__}: {error}", traceback.format_exc())
        progress.install(self._report, track_calls=True)

    def ready(self) -> tuple[bytes, Placement]:
        """:class:`Ready` or :class:`Failed`, pickled as a worker pipe pickles it (marshmallow's
        ``missing`` by reference: Ray's pickler would copy it), and where this replica runs.
        """
        return bytes(ForkingPickler.dumps(self._ready)), self.placement

    def call(
        self, hook: str, kwargs: dict[str, Any], request_id: str, with_progress: bool, save_to: str | None = None
    ) -> tuple[list[tuple[Any, ...]], Outcome]:
        """Run ``hook(**kwargs)`` (then the plugin's ``save`` into ``save_to``, a version
        directory's URL every node can reach): the progress reports not yet collected
        (``(fraction, message, metrics, step)``) and the outcome.
        """
        assert self.plugin is not None, "a replica that failed to start takes no call"
        token = logs.request_id.set(request_id)
        directory = None
        self._collect = with_progress
        progress.begin_call()
        try:
            kwargs, directory = _local_uploads(kwargs)
            outcome = _portable(execute(self.plugin, hook, kwargs, self.options.max_result_size, save_to))
        finally:
            logs.request_id.reset(token)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        with progress.ending_call(), self._lock:
            reports, self._reports = self._reports, []
            self._collect = False
        return reports, outcome

    @ray.method(concurrency_group="control")
    def progress(self) -> list[tuple[Any, ...]]:
        """The progress reports of the running call made since the last look."""
        with self._lock:
            reports, self._reports = self._reports, []
        return reports

    @ray.method(concurrency_group="control")
    def watch(self) -> None:
        """Never returns: the driver learns of this replica's death when this call fails."""
        threading.Event().wait()

    def _report(self, *report: Any) -> None:
        with self._lock:
            if self._collect:
                self._reports.append(report)


def _local_uploads(kwargs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``kwargs`` with each :class:`Upload` (alone or in a list) written to a file of a
    temporary directory of this node, as the :class:`UploadedFile` plugins receive; and
    that directory (None: no upload), which the caller deletes.
    """
    directory = None

    def local(value: Any) -> Any:
        nonlocal directory
        if isinstance(value, list):
            return [local(item) for item in value]
        if not isinstance(value, Upload):
            return value
        if directory is None:
            directory = tempfile.mkdtemp(prefix="deepaas-like-upload-")
        descriptor, path = tempfile.mkstemp(dir=directory, suffix=value.suffix)
        data = ray.get(value.data) if isinstance(value.data, ray.ObjectRef) else value.data
        with open(descriptor, "wb") as file:
            file.write(memoryview(data).cast("B") if len(data) else b"")
        return UploadedFile(value.name, path, value.content_type, value.original_filename)

    try:
        return {key: local(value) for key, value in kwargs.items()}, directory
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _portable(outcome: Outcome) -> Outcome:
    """``outcome`` with binary results as :class:`Blob`: a file on this node is read (and
    deleted if the worker made it), since the server may run elsewhere.
    """
    if isinstance(outcome, BatchResult):
        return BatchResult([_portable(one) for one in outcome.outcomes])
    if not isinstance(outcome, Result):
        return outcome
    value = outcome.value
    if isinstance(value, bytes):
        return Result(Blob(as_array(value))) if len(value) > BLOB_THRESHOLD else outcome
    if isinstance(value, FileResult):
        try:
            blob = Blob(file_data(value.path), value.media_type)
        except OSError as error:
            message = f"the result file {value.path} cannot be read on the node that made it: {error.strerror or error}"
            return Error(type(error).__name__, message, "")
        finally:
            value.discard()
        return Result(blob)
    return outcome
