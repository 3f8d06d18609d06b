"""Model versions as the server serves them: each under its own id (``name@n``), its workers
started on its first call (lazy loading) and stopped again when more than
``max_loaded`` versions are loaded here (the least recently used first).

The versions and what each model's name serves (promotions) are rows of the server's
database, shared by every instance: a version made or promoted on one instance is seen by
the others at their next look (every ``poll_interval`` seconds; a version asked for by id
is looked up at once). A promoted version is loaded as soon as it is seen, and stays
loaded while promoted: it is what its model's name answers with.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from deepaas_like.exceptions import (
    HookNotImplemented,
    ModelNotFound,
    VersionConflict,
    VersionNotFound,
    VersionUnavailable,
)
from deepaas_like.registry.records import VersionRecord, VersionRecords, parse_version_id, version_id
from deepaas_like.registry.storage import ModelStore
from deepaas_like.results import Prediction
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.serving.served import ServedModel
from deepaas_like.workers.base import ProgressCallback

__all__ = ["RETRY_LOAD_AFTER", "ModelVersions", "VersionFactory", "VersionState", "version_document"]

LOG = logging.getLogger(__name__)
#: Seconds a version that failed to load is answered 503 at once before a call tries again.
RETRY_LOAD_AFTER = 30.0
#: Makes the served model of a version, not yet started: (its record, its directory's URL,
#: its model's schemas, which the version shares).
VersionFactory = Callable[[VersionRecord, str, ModelSchemas], ServedModel]


class VersionState(enum.StrEnum):
    """Whether a version has workers on this instance."""

    LOADED = "loaded"
    LOADING = "loading"
    UNLOADED = "unloaded"
    UNAVAILABLE = "unavailable"


@dataclasses.dataclass
class _Loaded:
    """A version with workers here: ``ready`` is their start; ``in_flight`` calls use them."""

    served: ServedModel
    ready: asyncio.Task[None]
    started: float
    in_flight: int = 0


class ModelVersions:
    """The versions of the ``models`` whose plugin makes them, recorded in ``records``,
    stored in ``store``; ``make`` builds a version's served model. A first call waits at
    most ``load_timeout`` seconds for the version's workers; beyond ``max_loaded`` loaded
    versions (0: no bound) the least recently used idle one is unloaded. ``on_load`` gets
    (model, seconds) of each load; :attr:`on_change` is told when versions appear or go.
    """

    def __init__(
        self,
        models: dict[str, ServedModel],
        records: VersionRecords,
        store: ModelStore,
        make: VersionFactory,
        *,
        max_loaded: int = 0,
        load_timeout: float = 120.0,
        poll_interval: float = 0.5,
        on_load: Callable[[str, float], None] | None = None,
    ) -> None:
        self.models = models
        self.records = records
        self.store = store
        self.make = make
        self.max_loaded = max_loaded
        self.load_timeout = load_timeout
        self.poll_interval = poll_interval
        #: Told when versions appear or go (the HTTP front redocuments them); set by the front.
        self.on_change: Callable[[], None] | None = None
        self.on_load = on_load
        #: The versions known here (id -> record), as of the last look at the database.
        self.known: dict[str, VersionRecord] = {}
        self._promoted: dict[str, int] = {}
        self._loaded: collections.OrderedDict[str, _Loaded] = collections.OrderedDict()
        self._failures: dict[str, tuple[str, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poll: asyncio.Task[None] | None = None

    @property
    def bases(self) -> list[str]:
        """The served models whose trainings make versions."""
        return [name for name, model in self.models.items() if model.makes_versions]

    async def start(self) -> None:
        """Read the versions and promotions, and keep looking at the database every
        ``poll_interval`` seconds (the router asks :meth:`promoted` what a name serves).
        """
        if not self.bases:
            return
        await self.refresh()
        self._poll = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """Stop looking and stop every loaded version's workers."""
        tasks = [task for task in (self._poll, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loaded, self._loaded = list(self._loaded.values()), collections.OrderedDict()
        for entry in loaded:
            entry.ready.cancel()
        await asyncio.gather(*(entry.ready for entry in loaded), return_exceptions=True)
        await asyncio.gather(*(entry.served.stop() for entry in loaded), return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except Exception as error:  # noqa: BLE001 - the next look tries again (the store logs outages)
                LOG.debug("cannot read the model versions: %s", error)

    async def refresh(self) -> None:
        """Read the versions and promotions of every versioned model from the database;
        versions deleted meanwhile (by any instance) are unloaded here.
        """
        bases = self.bases
        records, self._promoted = await self.records.catalog(bases)
        known = {record.id: record for record in records}
        changed = known.keys() != self.known.keys()
        self.known = known
        for gone in [vid for vid, entry in self._loaded.items() if vid not in known and entry.in_flight == 0]:
            self._unload(gone)
        self._load_promoted()
        if changed and self.on_change is not None:
            self.on_change()

    def _load_promoted(self) -> None:
        """Start loading every promoted version that is not loaded here, unless its last
        load failed less than :data:`RETRY_LOAD_AFTER` seconds ago: a model's name serves
        it, so its first call should not wait, and a failure shows in :meth:`unservable`.
        """
        for vid in self._promoted_ids():
            record = self.known.get(vid)
            if record is not None and vid not in self._loaded:
                with contextlib.suppress(VersionUnavailable):  # failed recently: tried again later
                    self._entry(record)

    def _promoted_ids(self) -> set[str]:
        return {version_id(model, number) for model, number in self._promoted.items()}

    def added(self, record: VersionRecord) -> None:
        """A training here made version ``record``: known at once, without waiting for a look."""
        if record.id not in self.known:
            self.known = {**self.known, record.id: record}
            if self.on_change is not None:
                self.on_change()

    # -- reading -------------------------------------------------------------------------

    def base(self, name: str) -> ServedModel:
        """The served model ``name`` if its trainings make versions; raises ``ModelNotFound``
        (404) for a model not served, ``HookNotImplemented`` (501) for one without versions.
        """
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"model {name!r} not found; served: {', '.join(self.models)}")
        if not model.makes_versions:
            raise HookNotImplemented(
                f"model {name!r} makes no versions: its plugin does not implement save() and load()"
            )
        return model

    async def find(self, model: str, number: int) -> VersionRecord:
        """Version ``number`` of ``model``; raises ``ModelNotFound``, ``HookNotImplemented``
        and ``VersionNotFound`` (404).
        """
        self.base(model)
        vid = version_id(model, number)
        record = self.known.get(vid) or await self.records.get(model, number)
        if record is None:
            raise VersionNotFound(f"model {model!r} has no version {number} ({vid})")
        return record

    async def resolve(self, name: str) -> VersionRecord | None:
        """The version a model name such as ``text_classifier@3`` names, or None when
        ``name`` is not a version id of a served model that makes versions. Raises
        ``VersionNotFound``.
        """
        parsed = parse_version_id(name)
        if parsed is None or parsed[0] not in self.models or not self.models[parsed[0]].makes_versions:
            return None  # as before versions: an unknown model
        return await self.find(*parsed)

    async def list(self, model: str) -> list[VersionRecord]:
        """The versions of ``model``, newest first (read afresh)."""
        self.base(model)
        return await self.records.versions_of([model])

    def promoted(self, model: str) -> str | None:
        """The id of the version ``model``'s name serves (None: the plugin itself)."""
        number = self._promoted.get(model)
        return None if number is None else version_id(model, number)

    def state(self, vid: str) -> tuple[VersionState, str | None]:
        """Whether version ``vid`` is loaded here, and why it is unavailable if it is."""
        entry = self._loaded.get(vid)
        if entry is not None:
            return (VersionState.LOADED if entry.ready.done() else VersionState.LOADING), None
        failure = self._failures.get(vid)
        if failure is not None:
            return VersionState.UNAVAILABLE, failure[0]
        return VersionState.UNLOADED, None

    def unservable(self) -> dict[str, str]:
        """The models whose name cannot serve here because the last load of their promoted
        version failed (model -> why), until a load of it succeeds or the promotion changes.
        """
        failed = {}
        for model, number in self._promoted.items():
            failure = self._failures.get(version_id(model, number))
            if failure is not None:
                failed[model] = f"{model} serves its promoted version, which cannot serve here: {failure[0]}"
        return failed

    def loaded(self) -> dict[str, ServedModel]:
        """The versions with workers here (id -> served model)."""
        return {vid: entry.served for vid, entry in self._loaded.items() if entry.ready.done()}

    # -- changing ------------------------------------------------------------------------

    async def delete(self, model: str, number: int) -> VersionRecord:
        """Delete a version: its record (its number is not used again), its workers here and
        its directory. Raises ``VersionConflict`` (409) for the promoted version.
        """
        record = await self.find(model, number)
        await self.refresh()
        if self._promoted.get(model) == number:
            raise VersionConflict(
                f"{record.id} is what {model} serves: promote another version or roll back before deleting it"
            )
        if not await self.records.delete(model, number):
            raise VersionNotFound(f"model {model!r} has no version {number} ({record.id})")
        self._failures.pop(record.id, None)
        if record.id in self._loaded:
            self._unload(record.id)
        try:
            await asyncio.to_thread(self.store.remove, record.location)
        except Exception:  # noqa: BLE001 - the record is gone: the version is, for every client
            LOG.exception("cannot remove the directory of deleted version %s", record.id)
        await self.refresh()
        return record

    async def promote(self, model: str, number: int) -> VersionRecord:
        """Have ``model``'s name serve version ``number`` from now on (every instance, at
        its next look), once it is loaded here. Raises ``VersionConflict`` (409) naming the
        load error when it cannot load (the previous promotion stays), and
        ``VersionUnavailable`` (503) when it is still loading after ``load_timeout``.
        """
        record = await self.find(model, number)
        try:
            async with self._serving(record):
                pass
        except VersionUnavailable as error:
            loading = self._loaded.get(record.id)
            if loading is not None and not loading.ready.done():
                raise  # still loading: the client tries again
            serves = self.promoted(model) or "its plugin"
            raise VersionConflict(
                f"{record.id} cannot be promoted, {model} still serves {serves}: {error.message}"
            ) from None
        await self.records.promote(model, number)
        await self.refresh()
        LOG.info("%s now serves %s", model, record.id)
        return record

    async def rollback(self, model: str) -> str | None:
        """Undo ``model``'s latest promotion; returns what its name serves now (a version
        id, or None: the plugin). Raises ``VersionConflict`` when nothing was promoted.
        """
        self.base(model)
        if not await self.records.rollback(model):
            raise VersionConflict(f"model {model!r} has no promotion to roll back")
        await self.refresh()
        LOG.info("%s rolled back; it now serves %s", model, self.promoted(model) or "its plugin")
        return self.promoted(model)

    # -- serving -------------------------------------------------------------------------

    async def predict(
        self,
        vid: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Prediction:
        """Predict with version ``vid``, loading it first if it is not loaded here. Raises
        ``VersionNotFound``, ``VersionUnavailable`` (still loading after ``load_timeout``,
        or failed to load), and what :meth:`ServedModel.predict` raises.
        """
        parsed = parse_version_id(vid)
        if parsed is None:
            raise VersionNotFound(f"{vid!r} is not a model version id")
        record = await self.find(*parsed)
        async with self._serving(record) as served:
            return await served.predict(kwargs, job_id, on_progress)

    @contextlib.asynccontextmanager
    async def _serving(self, record: VersionRecord) -> AsyncIterator[ServedModel]:
        """The version's served model once loaded here (loading it if need be), kept
        loaded while the block runs. Raises ``VersionUnavailable``.
        """
        entry = self._entry(record)
        entry.in_flight += 1
        self._loaded.move_to_end(record.id)
        try:
            self._trim()
            await self._ready(record.id, entry)
            yield entry.served
        finally:
            entry.in_flight -= 1
            self._trim()

    async def kill(self, job_id: str) -> bool:
        for entry in list(self._loaded.values()):
            if entry.ready.done() and await entry.served.kill(job_id):
                return True
        return False

    def _entry(self, record: VersionRecord) -> _Loaded:
        entry = self._loaded.get(record.id)
        if entry is not None:
            return entry
        failure = self._failures.get(record.id)
        if failure is not None and time.monotonic() - failure[1] < RETRY_LOAD_AFTER:
            raise VersionUnavailable(failure[0])
        url = self.store.url_of(record.location)
        served = self.make(record, url, self.models[record.model].schemas)
        entry = _Loaded(served, asyncio.create_task(self._load(record, served, url)), time.monotonic())
        # A failed load is reported to the calls waiting for it, and kept in _failures.
        entry.ready.add_done_callback(lambda task: task.cancelled() or task.exception())
        self._loaded[record.id] = entry
        return entry

    async def _load(self, record: VersionRecord, served: ServedModel, url: str) -> None:
        LOG.info("loading model version %s from %s", record.id, url)
        started = time.monotonic()
        try:
            if not await asyncio.to_thread(self.store.exists, record.location):
                raise VersionUnavailable(f"model version {record.id} is unavailable: its directory {url} is missing")
            await served.start()
        except asyncio.CancelledError:
            await asyncio.shield(served.stop())
            raise
        except Exception as error:  # noqa: BLE001 - the version is unavailable, the others serve
            reason = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            if not reason.startswith(f"model version {record.id}"):
                reason = f"model version {record.id} is unavailable: {reason}"
            LOG.error("%s", reason)
            reason = self._told(reason, record)
            self._failures[record.id] = (reason, time.monotonic())
            if self._loaded.get(record.id) is not None and self._loaded[record.id].served is served:
                del self._loaded[record.id]
            await asyncio.shield(served.stop())
            raise VersionUnavailable(reason) from None
        self._failures.pop(record.id, None)
        seconds = time.monotonic() - started
        LOG.info("model version %s loaded in %.2f s", record.id, seconds)
        if self.on_load is not None:
            self.on_load(record.model, seconds)

    def _told(self, reason: str, record: VersionRecord) -> str:
        """``reason`` as clients read it: the version's directory written as ``<version
        directory>``, since its path names the training's uuid, which only the version's
        API key may learn (the log keeps the path).
        """
        for place in (self.store.url_of(record.location), self.store.path_of(record.location)):
            reason = reason.replace(place, "<version directory>")
        return reason.replace(record.job, "<training>")

    async def _ready(self, vid: str, entry: _Loaded) -> None:
        done, _ = await asyncio.wait({entry.ready}, timeout=self.load_timeout)
        if not done:
            raise VersionUnavailable(
                f"model version {vid} is still loading after {self.load_timeout:g} s (version-load-timeout); "
                "try again shortly"
            )
        entry.ready.result()  # raises VersionUnavailable when the load failed

    def _trim(self) -> None:
        """Unload the least recently used idle versions beyond ``max_loaded``, never a
        promoted one (so promoted versions alone may exceed it).
        """
        if not self.max_loaded:
            return
        promoted = self._promoted_ids()  # what the models' names serve stays loaded
        while len(self._loaded) > self.max_loaded:
            idle = next(
                (vid for vid, e in self._loaded.items() if e.in_flight == 0 and e.ready.done() and vid not in promoted),
                None,
            )
            if idle is None:
                return  # every loaded version is busy: the next call that ends unloads one
            LOG.info("unloading model version %s (least recently used; max-loaded-versions %d)", idle, self.max_loaded)
            self._unload(idle)

    def _unload(self, vid: str) -> None:
        entry = self._loaded.pop(vid)
        entry.ready.cancel()
        task = asyncio.create_task(entry.served.stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def version_document(
    record: VersionRecord, state: str, promoted: bool, message: str | None = None, training: bool = True
) -> dict[str, Any]:
    """A model version: ``id`` (``name@n``, callable as a model name), ``model``,
    ``version`` (its number), ``parent`` (the model trained), ``training`` (the job's
    uuid), its ``arguments`` and ``metrics``, ``created`` (as job dates print), ``state``
    here (``loaded``, ``loading``, ``unloaded``, ``unavailable`` with a ``message``),
    whether the model's name serves it (``promoted``), and its ``mlflow_run_id``. Without
    ``training`` (a caller that may not see the training: another API key's) the
    training's uuid, arguments and MLflow run are left out.
    """
    document: dict[str, Any] = {
        "id": record.id,
        "model": record.model,
        "version": record.number,
        "parent": record.parent,
    }
    if training:
        document.update(training=record.job, arguments=record.arguments)
    document.update(metrics=record.metrics, created=str(record.created), state=state, promoted=promoted)
    if message is not None:
        document["message"] = message
    if training and record.run_id is not None:
        document["mlflow_run_id"] = record.run_id
    return document
