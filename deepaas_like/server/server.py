"""The server object: from one :class:`~deepaas_like.settings.Settings`, the models' worker
pools, the job database, the jobs, the model versions, MLflow tracking and the gRPC front,
started in order and closed in the reverse order (``async with Server.open(settings)``).

The fronts are built from it and import nothing of each other: the aiohttp application
(:func:`http_app`, which opens the server when it starts) and the gRPC server (started here
once everything it serves is up, stopped before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from deepaas_like.api.app import create_app
from deepaas_like.api.documents import job_document
from deepaas_like.api.metrics import Metrics
from deepaas_like.database import database_identity
from deepaas_like.jobs.hooks import TrainingHook
from deepaas_like.jobs.result_files import ResultFiles
from deepaas_like.jobs.service import Jobs
from deepaas_like.jobs.store import JobStore
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.model.loading import resolve_model_names
from deepaas_like.protos import require as require_grpc
from deepaas_like.registry.records import VersionRecord, VersionRecords
from deepaas_like.registry.storage import ModelStore
from deepaas_like.server.pools import PoolFactory, default_pools
from deepaas_like.serving.autoscaling import Autoscaling
from deepaas_like.serving.calls import CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.router import Router
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import check_upload_dir, remove_orphaned_uploads
from deepaas_like.serving.version_making import VersionMaking
from deepaas_like.settings import Settings, default_model_store, default_results_dir
from deepaas_like.tracking import Tracker, TrackingHook

if TYPE_CHECKING:  # the grpc extra may be missing: imported only when --grpc-port is set
    from deepaas_like.grpc_api.server import GrpcServer

__all__ = ["Server", "http_app"]

LOG = logging.getLogger(__name__)


def http_app(settings: Settings, pools: PoolFactory | None = None) -> web.Application:
    """The aiohttp application serving ``settings.model_names`` (every installed model if
    empty), their workers made by ``pools`` (default: as ``--executor`` says; tests pass
    in-process pools). It opens the :class:`Server` when it starts and closes it when it
    stops; a model that is not installed or fails to load makes its start raise
    ``PluginLoadError``.
    """
    metrics = Metrics()
    return create_app(settings, lambda: Server.open(settings, pools, metrics), metrics)


@dataclasses.dataclass
class Server:
    """What the fronts serve: the ``calls`` (the call service every front's calls go
    through), the ``models`` by name, their ``versions``, the ``jobs``, the shutdown
    ``drain`` and the ``metrics``; ``grpc`` when ``--grpc-port`` is set.
    """

    settings: Settings
    metrics: Metrics
    calls: CallService
    models: dict[str, ServedModel]
    versions: ModelVersions
    jobs: Jobs
    grpc: GrpcServer | None = None

    @property
    def drain(self) -> Drain:
        return self.calls.drain

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, pools: PoolFactory | None = None, metrics: Metrics | None = None
    ) -> AsyncIterator[Server]:
        """Start every model's workers and open the job database (side by side: both take a
        while), then the model versions, the jobs and gRPC; on the way out stop them in the
        reverse order. Raises ``PluginLoadError``, ``StartupError``, ``ExtraNotInstalled``.
        """
        if settings.grpc_port:
            require_grpc("--grpc-port")
        metrics = metrics or Metrics()
        pools = pools or default_pools(settings)
        check_upload_dir(settings.upload_dir)
        results = ResultFiles(settings.results_dir or default_results_dir(settings.database_url))
        results.check()
        names = resolve_model_names(list(settings.model_names), settings.namespace)
        models = {name: _served_model(name, settings, pools, metrics) for name in names}
        async with contextlib.AsyncExitStack() as stack:
            store = await _start(models, settings.database_url)
            stack.push_async_callback(store.close)
            stack.push_async_callback(_stop, models)
            versions = await _versions(settings, store, models, pools, metrics)
            stack.push_async_callback(versions.close)
            router = Router(models, versions)
            jobs = _jobs(settings, store, router, versions, results)
            await jobs.start()
            stack.push_async_callback(jobs.close)
            await _remove_orphaned_uploads(settings, jobs)
            server = cls(settings, metrics, _call_service(settings, router, jobs), models, versions, jobs)
            if settings.grpc_port:
                server.grpc = await _grpc(server)
                stack.push_async_callback(server.grpc.stop)
            LOG.debug("serving %s", ", ".join(models))  # the start line names them, with the URLs
            yield server

    def shutting_down(self) -> None:
        """The server is stopping: predictions that cannot finish within ``shutdown-timeout``
        are answered 503 before it ends, event streams end, gRPC stops taking calls.
        """
        self.drain.start(self.settings.shutdown_timeout)
        self.jobs.end_feeds()
        if self.grpc is not None:
            self.grpc.shutting_down()


async def _start(models: dict[str, ServedModel], database_url: str) -> JobStore:
    """Start ``models`` and open the job database side by side; on a failure of either,
    stop what started and raise it."""
    started = await asyncio.gather(
        JobStore.open(database_url), *(model.start() for model in models.values()), return_exceptions=True
    )
    failure = next((r for r in started if isinstance(r, BaseException)), None)
    if failure is not None:
        await _stop(models)
        if isinstance(started[0], JobStore):
            await started[0].close()
        raise failure
    assert isinstance(started[0], JobStore)
    return started[0]


async def _stop(models: dict[str, ServedModel]) -> None:
    await asyncio.gather(*(model.stop() for model in models.values()), return_exceptions=True)


def _served_model(name: str, settings: Settings, pools: PoolFactory, metrics: Metrics) -> ServedModel:
    model = settings.for_model(name)
    return ServedModel(
        name,
        pools(name, PREDICT, model.workers),
        lambda: pools(name, TRAIN, model.train_workers),
        max_batch_size=model.max_batch_size,
        batch_wait=model.batch_wait_ms / 1000,
        on_batch=metrics.batch_size.labels(name).observe,
        autoscaling=Autoscaling(model.workers, model.max_workers, settings.scale_up_delay, settings.scale_down_delay)
        if model.max_workers > model.workers
        else None,
    )


def _served_version(settings: Settings, pools: PoolFactory, metrics: Metrics) -> Callable[..., ServedModel]:
    """Makes the served model of a version: the base model's settings, ``version-workers``
    workers that load the version's directory after warming.
    """

    def make(record: VersionRecord, url: str, schemas: ModelSchemas) -> ServedModel:
        model = settings.for_model(record.model)
        return ServedModel(
            record.id,
            pools(record.model, PREDICT, model.version_workers, load_from=url),
            max_batch_size=model.max_batch_size,
            batch_wait=model.batch_wait_ms / 1000,
            on_batch=metrics.batch_size.labels(record.id).observe,
            schemas=schemas,
        )

    return make


async def _versions(
    settings: Settings, store: JobStore, models: dict[str, ServedModel], pools: PoolFactory, metrics: Metrics
) -> ModelVersions:
    """The model versions of ``models`` (none unless a plugin has save and load), read from
    the job database; their model store is checked only when some plugin makes versions.
    """
    model_store = ModelStore(settings.model_store or default_model_store(settings.database_url))
    versions = ModelVersions(
        models,
        VersionRecords(store.database),
        model_store,
        _served_version(settings, pools, metrics),
        max_loaded=settings.max_loaded_versions,
        load_timeout=settings.version_load_timeout,
        poll_interval=settings.job_poll_interval,
        on_load=lambda model, seconds: metrics.version_load_seconds.labels(model).observe(seconds),
    )
    if versions.bases:
        await asyncio.to_thread(model_store.check)
        await versions.start()
    return versions


def _jobs(settings: Settings, store: JobStore, router: Router, versions: ModelVersions, results: ResultFiles) -> Jobs:
    """The jobs of the models ``router`` serves (their handles: an asynchronous prediction
    follows promotions), with the training hooks: a version made after each training of a
    model that makes versions, an MLflow run with ``--mlflow-tracking-uri``."""
    tracker = Tracker(settings.mlflow_tracking_uri, settings.instance) if settings.mlflow_tracking_uri else None
    hooks: list[TrainingHook] = [
        *([VersionMaking(versions.store, versions.records, versions.added)] if versions.bases else []),
        *([TrackingHook(tracker)] if tracker is not None else []),
    ]
    return Jobs.from_settings(store, router.handles(), settings, results=results, render=job_document, hooks=hooks)


def _call_service(settings: Settings, router: Router, jobs: Jobs) -> CallService:
    """The call service every front's calls go through (the upload owner tag computed once)."""
    keys = bool(settings.auth_tokens or settings.admin_tokens)
    upload_owner = database_identity(settings.database_url)
    return CallService(router, jobs, Drain(), settings.endpoint_on, settings.upload_dir, upload_owner, keys)


async def _remove_orphaned_uploads(settings: Settings, jobs: Jobs) -> None:
    removed = remove_orphaned_uploads(settings.upload_dir, settings.database_url, *await jobs.upload_owners())
    if removed:
        LOG.warning("removed %d upload folder(s) left by stopped servers: %s", len(removed), ", ".join(removed))


async def _grpc(server: Server) -> GrpcServer:
    """The gRPC server (``--grpc-port``) on the same models, jobs, API keys, drain and
    metrics as HTTP, listening."""
    # The grpc extra: imported only when gRPC is on (open() checked it is installed).
    from deepaas_like.grpc_api.server import GrpcServer
    from deepaas_like.grpc_api.service import Shared

    shared = Shared(server.settings, server.calls, server.metrics.grpc_call)
    grpc = GrpcServer(server.models, shared)
    await grpc.start()
    return grpc
