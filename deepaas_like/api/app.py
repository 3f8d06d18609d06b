"""The aiohttp application: middlewares, error mapping and resource lifetimes. The routes
are in ``api/routes.py``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_middlewares import normalize_path_middleware

from deepaas_like.api import openapi
from deepaas_like.api.documents import job_document
from deepaas_like.api.keys import CALLS, DRAIN, GRPC, JOBS, LINKS, LOG_BUFFER, MODELS, SETTINGS, SHUTTING_DOWN, VERSIONS
from deepaas_like.api.links import Links
from deepaas_like.api.metrics import METRICS, Metrics, metrics_middleware, publishing
from deepaas_like.api.responses import json_response
from deepaas_like.api.routes import ACCESS, ROUTES, add_routes
from deepaas_like.api.security import ROUTE_ACCESS, auth_middleware, request_id_middleware, setup_cors
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments, PluginError
from deepaas_like.jobs.result_files import ResultFiles
from deepaas_like.jobs.runner import JobRunner
from deepaas_like.jobs.store import JobStore
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.model.loading import resolve_model_names
from deepaas_like.protos import require as require_grpc
from deepaas_like.serving.autoscaling import Autoscaling
from deepaas_like.serving.calls import CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.router import Router
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import check_upload_dir, database_tag, remove_orphaned_uploads
from deepaas_like.settings import ModelSettings, Settings, default_model_store, default_results_dir
from deepaas_like.tracking import Tracker
from deepaas_like.versions.records import VersionRecord, VersionRecords
from deepaas_like.versions.storage import ModelStore
from deepaas_like.workers.base import WorkerPool
from deepaas_like.workers.process import ProcessWorkerPool, WorkerOptions
from deepaas_like.workers.ray import ClusterOptions, RayCluster, RayResources, RayWorkerPool

LOG = logging.getLogger(__name__)
#: Makes the worker pool of a model: (model name, kind: ``"predict"`` or ``"train"``, number
#: of workers, and for a model version ``load_from=`` its directory's URL) -> a pool, not yet
#: started.
PoolFactory = Callable[..., WorkerPool]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes JSON: ``{"message": ...}``, or ``{"field": [...]}`` for 422,
    with the status the exception class carries.
    """
    debug = request.app[SETTINGS].debug
    try:
        return await handler(request)
    except InvalidArguments as error:
        response = json_response(error.messages, status=error.status)
        if getattr(error, "close_connection", False):
            response.force_close()
        return response
    except DeepaasLikeError as error:
        if error.status >= 500 and not isinstance(error, PluginError):  # plugin errors: the worker logged them
            LOG.error("%s %s: %s", request.method, request.path, error.message)
        body = {"message": error.message}
        if debug and isinstance(error, PluginError) and error.traceback:
            body["traceback"] = error.traceback
        return json_response(body, status=error.status, headers=error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response({"message": error.reason}, status=error.status, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence: JSON, and keep serving
        LOG.exception("unhandled error on %s %s", request.method, request.path)
        body = {"message": f"internal server error: {type(error).__name__}"}
        if debug:
            body["traceback"] = traceback.format_exc()
        return json_response(body, status=500)


def _worker_options(settings: Settings, model: ModelSettings, load_from: str | None, **extra: Any) -> WorkerOptions:
    """What every executor's workers of ``model`` are started with, and ``extra``."""
    return WorkerOptions(
        warm=model.warm,
        threads=model.worker_threads,
        debug=settings.debug,
        log_json=settings.log_json,
        load_from=load_from,
        **extra,
    )


def process_pools(settings: Settings) -> PoolFactory:
    """The default :data:`PoolFactory`: persistent worker processes, set up as each model's
    :class:`~deepaas_like.settings.ModelSettings` say.
    """

    def make(name: str, kind: str, size: int, load_from: str | None = None) -> WorkerPool:
        model = settings.for_model(name)
        options = _worker_options(
            settings,
            model,
            load_from,
            gpus=model.gpus,
            memory_limit_mb=model.worker_memory_limit_mb,
            max_result_size=model.max_result_size,
            results_dir=settings.upload_dir,
        )
        if kind == TRAIN:
            return ProcessWorkerPool(name, settings.namespace, size=size, options=options)
        return ProcessWorkerPool(
            name,
            settings.namespace,
            size=size,
            options=options,
            timeout=model.timeout(),
            max_queue=model.max_queue,
            depth=model.pipeline_depth,
        )

    return make


def ray_pools(settings: Settings) -> PoolFactory:
    """The :data:`PoolFactory` of ``--executor ray``: replicas (Ray actors) on the cluster at
    ``--ray-address``, each reserving what its model's :class:`~deepaas_like.settings.ModelSettings`
    say. The server connects when the first model starts.
    """
    cluster = RayCluster(
        ClusterOptions(
            address=settings.ray_address,
            connect_timeout=settings.ray_connect_timeout,
            head_timeout=settings.ray_head_timeout,
            reconnect_interval=settings.ray_reconnect_interval,
            results_dir=settings.upload_dir,
            debug=settings.debug,
            log_json=settings.log_json,
        )
    )

    def make(name: str, kind: str, size: int, load_from: str | None = None) -> WorkerPool:
        model = settings.for_model(name)
        resources = RayResources(
            model.ray_num_cpus, model.ray_num_gpus, model.ray_memory_mb, model.ray_resources, model.ray_node_labels
        )
        options = _worker_options(settings, model, load_from)
        if kind == TRAIN:
            return RayWorkerPool(cluster, name, settings.namespace, TRAIN, size, resources, options)
        options = dataclasses.replace(options, max_result_size=model.max_result_size)
        return RayWorkerPool(
            cluster, name, settings.namespace, PREDICT, size, resources, options, model.timeout(), model.max_queue
        )

    return make


def default_pools(settings: Settings) -> PoolFactory:
    """The pools of the executor ``--executor`` names."""
    return ray_pools(settings) if settings.executor == "ray" else process_pools(settings)


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


async def _versions(app: web.Application, store: JobStore, models: dict[str, ServedModel]) -> ModelVersions:
    """The model versions of ``models`` (none unless a plugin has save and load), read from
    the job database; their model store is checked only when some plugin makes versions.
    """
    settings = app[SETTINGS]
    model_store = ModelStore(settings.model_store or default_model_store(settings.database_url))
    versions = ModelVersions(
        models,
        VersionRecords(store.engine),
        model_store,
        _served_version(settings, app[_POOLS], app[METRICS]),
        max_loaded=settings.max_loaded_versions,
        load_timeout=settings.version_load_timeout,
        poll_interval=settings.job_poll_interval,
        on_change=lambda: openapi.document_versions(app, app[VERSIONS], settings),
        on_load=lambda model, seconds: app[METRICS].version_load_seconds.labels(model).observe(seconds),
    )
    app[VERSIONS] = versions
    if versions.bases:
        await asyncio.to_thread(model_store.check)
        await versions.start()
    return versions


def _capacity(settings: Settings, models: dict[str, ServedModel]) -> dict[tuple[str, str], int]:
    """How many jobs of each (model, kind) run at once here: its training or predict workers."""
    capacity = {}
    for name in models:
        capacity[(name, str(TRAIN))] = settings.for_model(name).train_workers
        capacity[(name, str(PREDICT))] = settings.for_model(name).workers
    return capacity


def _call_service(settings: Settings, router: Router, jobs: JobRunner, drain: Drain) -> CallService:
    """The call service every front's calls go through (the upload owner tag computed once)."""
    keys = bool(settings.auth_tokens or settings.admin_tokens)
    upload_owner = database_tag(settings.database_url)
    return CallService(router, jobs, drain, settings.endpoint_on, settings.upload_dir, upload_owner, keys)


async def _serving(app: web.Application) -> AsyncIterator[None]:
    """Start every model's workers and open the job database (side by side: both take a
    while), then run jobs; on the way out stop jobs, then workers, then the database.
    """
    settings = app[SETTINGS]
    check_upload_dir(settings.upload_dir)
    results = ResultFiles(settings.results_dir or default_results_dir(settings.database_url))
    results.check()
    names = resolve_model_names(list(settings.model_names), settings.namespace)
    models = {name: _served_model(name, settings, app[_POOLS], app[METRICS]) for name in names}
    started = await asyncio.gather(
        JobStore.open(settings.database_url), *(model.start() for model in models.values()), return_exceptions=True
    )
    failure = next((r for r in started if isinstance(r, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(model.stop() for model in models.values()), return_exceptions=True)
        if isinstance(started[0], JobStore):
            await started[0].close()
        raise failure
    store = started[0]
    assert isinstance(store, JobStore)
    app[MODELS] = models
    try:
        versions = await _versions(app, store, models)
    except BaseException:
        await asyncio.gather(*(model.stop() for model in models.values()), return_exceptions=True)
        await store.close()
        raise
    if settings.doc_endpoint:
        openapi.document(app[_API_SPEC].spec, ROUTES, models, settings)
    capacity = _capacity(settings, models)
    router = Router(models, versions)
    app[JOBS] = JobRunner(
        store,
        router.handles(),  # type: ignore[arg-type]
        settings.instance,
        capacity,
        poll_interval=settings.job_poll_interval,
        retention=settings.job_retention_hours * 3600,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_expiry=settings.heartbeat_expiry,
        results=results,
        render=job_document,
        idempotency_window=settings.idempotency_key_hours * 3600,
        model_store=versions.store if versions.bases else None,
        version_records=versions.records,
        on_version=versions.added,
        tracker=Tracker(settings.mlflow_tracking_uri, settings.instance) if settings.mlflow_tracking_uri else None,
    )
    await app[JOBS].start()
    app[CALLS] = _call_service(settings, router, app[JOBS], app[DRAIN])
    removed = remove_orphaned_uploads(settings.upload_dir, settings.database_url, *await app[JOBS].upload_owners())
    if removed:
        LOG.warning("removed %d upload folder(s) left by stopped servers: %s", len(removed), ", ".join(removed))
    LOG.info("serving %s", ", ".join(models))
    yield
    await app[JOBS].close()
    await versions.close()
    await asyncio.gather(*(model.stop() for model in models.values()), return_exceptions=True)
    await store.close()


async def _grpc(app: web.Application) -> AsyncIterator[None]:
    """The gRPC server (``--grpc-port``), on the same models, jobs, API keys, drain and
    metrics as HTTP: started once they are up, stopped before them.
    """
    # The grpc extra: imported only when gRPC is on (create_app checked it is installed).
    from deepaas_like.grpc_api.server import GrpcServer
    from deepaas_like.grpc_api.service import Shared

    shared = Shared(app[SETTINGS], app[CALLS], app[METRICS].grpc_call)
    app[GRPC] = GrpcServer(app[MODELS], shared)
    await app[GRPC].start()
    yield
    await app[GRPC].stop()


async def _document_versions(app: web.Application) -> None:
    openapi.document_versions(app, app[VERSIONS], app[SETTINGS])


async def _shutting_down(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers: event streams end instead of
    # holding the shutdown for the whole grace period, and predictions that cannot finish
    # in it are answered 503 before it ends. gRPC stops taking calls, as HTTP does.
    app[SHUTTING_DOWN].set()
    app[DRAIN].start(app[SETTINGS].shutdown_timeout)
    if JOBS in app:
        app[JOBS].end_feeds()
    if GRPC in app:
        app[GRPC].shutting_down()


_API_SPEC = web.AppKey("api_spec", openapi.AiohttpApiSpec)
_POOLS: web.AppKey[PoolFactory] = web.AppKey("pools")


class _BufferHandler(logging.Handler):
    def __init__(self, buffer: collections.deque[str]) -> None:
        super().__init__()
        self.buffer = buffer
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.append(self.format(record))


def create_app(settings: Settings, pools: PoolFactory | None = None) -> web.Application:
    """The application serving ``settings.model_names`` (every installed model if empty),
    their workers made by ``pools`` (default: :func:`default_pools`, as ``--executor`` says;
    tests pass in-process pools).

    Models start (workers spawned and warmed) when the application starts; a model that
    is not installed or fails to load makes start-up raise ``PluginLoadError``.
    """
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            auth_middleware,
            normalize_path_middleware(append_slash=True, redirect_class=web.HTTPPermanentRedirect),
        ],
        client_max_size=settings.client_max_size or 1024**4,
        client_max_fields=settings.max_form_parts,  # of urlencoded forms (0: none); multipart: api/arguments.py
    )
    app[SETTINGS] = settings
    app[_POOLS] = pools or default_pools(settings)
    app[LINKS] = Links(settings.base_path, settings.public_url, settings.trusted_proxies)
    app[ROUTE_ACCESS] = ACCESS
    app[SHUTTING_DOWN] = asyncio.Event()
    app[DRAIN] = Drain()
    app.on_shutdown.append(_shutting_down)
    app[METRICS] = Metrics()
    app[METRICS].app = app
    app.cleanup_ctx.append(_serving)
    app.cleanup_ctx.append(publishing)
    if settings.grpc_port:
        require_grpc("--grpc-port")
        app.cleanup_ctx.append(_grpc)
    add_routes(app, settings)
    if settings.debug_endpoint:
        app[LOG_BUFFER] = collections.deque(maxlen=2000)
        logging.getLogger().addHandler(_BufferHandler(app[LOG_BUFFER]))
    if settings.doc_endpoint:
        app[_API_SPEC] = openapi.setup_openapi(app, settings)
        app.on_startup.append(_document_versions)  # after the document is made (an on_startup too)
    if settings.cors_origins:
        setup_cors(app, settings.cors_origins)
    return app
