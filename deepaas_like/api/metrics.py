"""Prometheus metrics (prometheus-client) of one server process, served at ``/metrics``.

Request counts and latency are recorded by :func:`metrics_middleware`; queue depth, worker
restarts, live workers, jobs by state and which model versions are loaded are read when the
metrics are scraped (a loaded version's workers count under its id, ``name@n``). When several
server processes answer on one port, what adds their values up is set from above
(:attr:`Metrics.gather`, by :mod:`deepaas_like.cmd.process_server.metrics`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, runtime_checkable

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deepaas_like.api.app_keys import JOBS, MODEL_VERSIONS, MODELS
from deepaas_like.exceptions import DatabaseUnavailable
from deepaas_like.logs import request_id

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "CONTENT_TYPE",
    "METRICS",
    "Metrics",
    "Reading",
    "UnansweredLog",
    "database_readings",
    "metrics_endpoint",
    "metrics_middleware",
    "pool_readings",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's metrics, in a registry of their own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "deepaas_like_requests",
            "HTTP requests answered",
            ["model", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deepaas_like_request_duration_seconds",
            "Time to answer an HTTP request, in seconds",
            ["model", "route", "method"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "deepaas_like_batch_size",
            "Requests per predict_batch() call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "deepaas_like_grpc_requests",
            "gRPC calls answered",
            ["model", "method", "code"],
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "deepaas_like_grpc_request_duration_seconds",
            "Time to answer a gRPC call (to its last message, for streams), in seconds",
            ["model", "method"],
            registry=self.registry,
        )
        self.version_load_seconds = Histogram(
            "deepaas_like_version_load_seconds",
            "Time to load a model version on its first call (workers started, warmed, load()), in seconds",
            ["model"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.job_counts: dict[tuple[str, str, str], int] = {}
        self.database_up = True
        self.app: web.Application | None = None
        #: Set from above when this is one of several server processes: makes the exposition
        #: of every process's values added up. None: this process's alone.
        self.gather: Callable[[], bytes] | None = None
        self.registry.register(_ScrapeTimeCollector(self))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or what :attr:`gather` makes."""
        if self.gather is not None:
            return self.gather()
        return generate_latest(self.registry)

    def grpc_call(self, model: str, method: str, code: str, seconds: float) -> None:
        """Count a gRPC call of ``model``'s ``method`` that ended with ``code`` (``OK``,
        ``INVALID_ARGUMENT``, ...) after ``seconds``."""
        self.grpc_requests.labels(model, method, code).inc()
        self.grpc_latency.labels(model, method).observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


@dataclasses.dataclass
class Reading:
    """One metric's values read from the worker pools or the job database when scraped."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    counter: bool = False
    #: How server processes' values add up (prometheus-client's multiprocess modes).
    across_processes: Literal["livesum", "livemax"] = "livesum"
    values: dict[tuple[str, ...], float] = dataclasses.field(default_factory=dict)

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=list(self.labels))
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


def pool_readings(app: web.Application | None) -> list[Reading]:
    """Queue depth, workers, restarts and loaded versions of this process's models."""
    models = app.get(MODELS, {}) if app is not None else {}
    queue = Reading("deepaas_like_queue_depth", "Requests waiting for a predict worker", ("model",))
    workers = Reading("deepaas_like_workers", "Live predict workers (processes, or replicas on Ray)", ("model",))
    target = Reading(
        "deepaas_like_workers_target", "Predict workers the model keeps (autoscaling changes it)", ("model",)
    )
    starting = Reading(
        "deepaas_like_workers_starting", "Predict workers being started or placed, not warmed yet", ("model",)
    )
    devices = Reading(
        "deepaas_like_workers_by_device",
        "Live predict workers by node (local: this machine) and device (cpu, or gpu:ID)",
        ("model", "node", "device"),
    )
    restarts = Reading(
        "deepaas_like_worker_restarts",
        "Worker processes replaced after dying or being killed",
        ("model",),
        counter=True,
    )
    versions = app.get(MODEL_VERSIONS) if app is not None else None
    loaded = versions.loaded() if versions is not None else {}
    for name, served in {**models, **loaded}.items():
        pool = served.predict_pool
        queue.values[(name,)] = served.queued()
        workers.values[(name,)] = pool.live_workers
        target.values[(name,)] = pool.size
        starting.values[(name,)] = pool.starting
        placed = collections.Counter((p.node, p.device) for p in pool.placements())
        for (node, device), count in sorted(placed.items()):
            devices.values[(name, node, device)] = count
        restarts.values[(name,)] = served.worker_restarts
    states = Reading(
        "deepaas_like_model_version_loaded",
        "1 when the model version has workers on this server, else 0 (loaded on its first call)",
        ("model", "version"),
        across_processes="livemax",
    )
    for record in versions.known.values() if versions is not None else ():
        states.values[(record.model, record.id)] = 1 if record.id in loaded else 0
    return [queue, workers, target, starting, devices, restarts, states]


def database_readings(metrics: Metrics) -> list[Reading]:
    """Jobs by state and whether the job database answers: the same from every process."""
    jobs = Reading("deepaas_like_jobs", "Jobs in the database by state", ("model", "kind", "status"))
    jobs.values.update(sorted(metrics.job_counts.items()))
    database = Reading("deepaas_like_job_database_up", "1 when the job database's last read and write worked, else 0")
    database.values[()] = 1 if metrics.database_up else 0
    return [jobs, database]


class _ScrapeTimeCollector(Collector):
    """Values read from the job database and this process's worker pools when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator:
        for reading in (*pool_readings(self.metrics.app), *database_readings(self.metrics)):
            yield reading.family()


def _labels(request: web.Request) -> tuple[str, str]:
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    name = request.match_info.get("model_name", "")
    versions = request.app.get(MODEL_VERSIONS)
    known = name in request.app[MODELS] or (versions is not None and name in versions.known)
    return (name if known else ""), template


#: The status of a request whose client closed the connection before it was answered, or
#: while it was streamed (an event stream left by its client): nginx's 499 "client closed
#: request". aiohttp has none: it cancels the handler (``handler_cancellation``) and logs nothing.
CLIENT_CLOSED_REQUEST = 499


@runtime_checkable
class UnansweredLog(Protocol):
    """An access logger that also logs a request aiohttp logs none for (the process
    server's, :class:`deepaas_like.cmd.process_server.access_log.AccessLogger`)."""

    def log_unanswered(self, request: BaseRequest, status: int, seconds: float, request_id: str) -> None: ...


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request and time it, labelled by model, route template and status; a
    request whose client went away is counted, and its access line logged, as
    :data:`CLIENT_CLOSED_REQUEST`.
    """
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    except asyncio.CancelledError:
        if request.transport is None:  # the connection is lost: the client left
            status = CLIENT_CLOSED_REQUEST
            # Logged when the access log is on and is the process server's (not aiohttp's test client's).
            logger = getattr(request.protocol, "access_logger", None)
            if isinstance(logger, UnansweredLog):
                logger.log_unanswered(request, status, time.perf_counter() - started, request_id.get())
        raise
    finally:
        metrics = request.app[METRICS]
        model, route = _labels(request)
        metrics.requests.labels(model, route, request.method, str(status)).inc()
        metrics.latency.labels(model, route, request.method).observe(time.perf_counter() - started)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format. While the job database is away the
    job counts are the last known ones and ``deepaas_like_job_database_up`` is 0.
    """
    metrics = request.app[METRICS]
    try:
        # Bounded: a scrape must answer even while the database hangs.
        metrics.job_counts = await asyncio.wait_for(request.app[JOBS].counts(), 2.0)
        metrics.database_up = request.app[JOBS].database_up  # a locked SQLite file still reads
    except (DatabaseUnavailable, TimeoutError):
        metrics.database_up = False
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
