"""Prometheus metrics (prometheus-client), served at ``/metrics``.

Request counts and latency are recorded by :func:`metrics_middleware`; queue depth, worker
restarts, live workers, jobs by state and which model versions are loaded are read when the
metrics are scraped (a loaded version's workers count under its id, ``name@n``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deepaas_like.api.keys import JOBS, MODELS, VERSIONS
from deepaas_like.exceptions import DatabaseUnavailable

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
        self.registry.register(_ScrapeTimeCollector(self))
        self.app: web.Application | None = None

    def grpc_call(self, model: str, method: str, code: str, seconds: float) -> None:
        """Count a gRPC call of ``model``'s ``method`` that ended with ``code`` (``OK``,
        ``INVALID_ARGUMENT``, ...) after ``seconds``."""
        self.grpc_requests.labels(model, method, code).inc()
        self.grpc_latency.labels(model, method).observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


class _ScrapeTimeCollector(Collector):
    """Values read from the worker pools and the job database when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator:
        app = self.metrics.app
        models = app.get(MODELS, {}) if app is not None else {}
        queue = GaugeMetricFamily("deepaas_like_queue_depth", "Requests waiting for a predict worker", labels=["model"])
        workers = GaugeMetricFamily(
            "deepaas_like_workers", "Live predict workers (processes, or replicas on Ray)", labels=["model"]
        )
        target = GaugeMetricFamily(
            "deepaas_like_workers_target", "Predict workers the model keeps (autoscaling changes it)", labels=["model"]
        )
        starting = GaugeMetricFamily(
            "deepaas_like_workers_starting", "Predict workers being started or placed, not warmed yet", labels=["model"]
        )
        devices = GaugeMetricFamily(
            "deepaas_like_workers_by_device",
            "Live predict workers by node (local: this machine) and device (cpu, or gpu:ID)",
            labels=["model", "node", "device"],
        )
        restarts = CounterMetricFamily(
            "deepaas_like_worker_restarts", "Worker processes replaced after dying or being killed", labels=["model"]
        )
        versions = app.get(VERSIONS) if app is not None else None
        loaded = versions.loaded() if versions is not None else {}
        for name, served in {**models, **loaded}.items():
            pool = served.predict_pool
            queue.add_metric([name], served.queued())
            workers.add_metric([name], pool.live_workers)
            target.add_metric([name], pool.size)
            starting.add_metric([name], pool.starting)
            placed = collections.Counter((p.node, p.device) for p in pool.placements())
            for (node, device), count in sorted(placed.items()):
                devices.add_metric([name, node, device], count)
            restarts.add_metric([name], served.worker_restarts)
        states = GaugeMetricFamily(
            "deepaas_like_model_version_loaded",
            "1 when the model version has workers on this server, else 0 (loaded on its first call)",
            labels=["model", "version"],
        )
        for record in versions.known.values() if versions is not None else ():
            states.add_metric([record.model, record.id], 1 if record.id in loaded else 0)
        jobs = GaugeMetricFamily(
            "deepaas_like_jobs", "Jobs in the database by state", labels=["model", "kind", "status"]
        )
        for (name, kind, status), count in sorted(self.metrics.job_counts.items()):
            jobs.add_metric([name, kind, status], count)
        database = GaugeMetricFamily(
            "deepaas_like_job_database_up", "1 when the job database's last read and write worked, else 0"
        )
        database.add_metric([], 1 if self.metrics.database_up else 0)
        yield from (queue, workers, target, starting, devices, restarts, jobs, database, states)


def _labels(request: web.Request) -> tuple[str, str]:
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    name = request.match_info.get("model_name", "")
    versions = request.app.get(VERSIONS)
    known = name in request.app[MODELS] or (versions is not None and name in versions.known)
    return (name if known else ""), template


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request and time it, labelled by model, route template and status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
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
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE})
