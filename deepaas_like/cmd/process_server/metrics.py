"""The metrics of several server processes added up (``--server-processes``).

prometheus-client's multiprocess mode: every server process keeps its counters, histograms
and gauges in files of one folder, made by the supervisor and emptied of an ended process's
live gauges when it ends; a scrape of any process reads them all. The readings taken from a
process's worker pools (queue depth, workers, restarts, loaded versions) are published into
that folder every :data:`PUBLISH_INTERVAL` seconds and on each scrape; the job database's
readings are the same from every process and are read by the one scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from deepaas_like.api.metrics import METRICS, Metrics, Reading, database_readings, pool_readings

__all__ = ["MULTIPROCESS_ENV", "PUBLISH_INTERVAL", "Gathering", "forget_process", "gather_across_processes"]

#: prometheus-client's variable for the folder of its multiprocess mode.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two publications of a server process's pool readings.
PUBLISH_INTERVAL = 1.0


def gather_across_processes(directory: str) -> None:
    """Make this process one of several server processes whose metrics are added up:
    prometheus-client's multiprocess mode, keeping values in ``directory`` (shared by the
    processes, emptied of ended processes' gauges by the supervisor). Call before the
    application is made: its metrics are created in this mode.
    """
    os.environ[MULTIPROCESS_ENV] = directory
    values.ValueClass = values.get_value_class()


def forget_process(pid: int, directory: str) -> None:
    """The server process ``pid`` ended: its live gauges in ``directory`` stop counting
    (its counters and histograms stay, so that sums never go back)."""
    mark_process_dead(pid, directory)


class Gathering:
    """``/metrics`` of one of several server processes: every process's values in
    ``directory`` added up. :meth:`attach` installs it on an application.
    """

    def __init__(self, metrics: Metrics, directory: str) -> None:
        self.metrics = metrics
        self.directory = directory
        self._published = _PublishedReadings()

    @classmethod
    def attach(cls, app: web.Application, directory: str) -> Gathering:
        """Make ``app``'s ``/metrics`` add up the processes' values in ``directory``, and
        publish this process's pool readings while it runs (a cleanup context, the last:
        started once the pools are up, stopped before them)."""
        gathering = cls(app[METRICS], directory)
        app[METRICS].gather = gathering.exposition
        app.cleanup_ctx.append(gathering.publishing)
        return gathering

    def publish(self) -> None:
        """Write this process's pool readings where the other processes add them up."""
        self._published.publish(pool_readings(self.metrics.app))

    def exposition(self) -> bytes:
        """Every server process's metrics added up, in Prometheus' text format."""
        self.publish()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        registry.register(_DatabaseCollector(self.metrics))
        return generate_latest(registry)

    async def publishing(self, app: web.Application) -> AsyncIterator[None]:
        """Publish the pool readings every :data:`PUBLISH_INTERVAL` seconds while ``app`` runs."""

        async def loop() -> None:
            while True:
                self.publish()
                await asyncio.sleep(PUBLISH_INTERVAL)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _DatabaseCollector(Collector):
    """The job database's readings when scraped, beside the pool readings gathered across
    the server processes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator:
        for reading in database_readings(self.metrics):
            yield reading.family()


class _PublishedReadings:
    """The pool readings of one of several server processes, kept in prometheus-client
    metrics that its multiprocess mode adds up across the processes (gauges of live
    processes: ``livesum``/``livemax``; counters: every process, ended ones included).
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Gauge | Counter] = {}
        self._last: dict[str, dict[tuple[str, ...], float]] = {}

    def publish(self, readings: list[Reading]) -> None:
        for reading in readings:
            metric = self._metrics.get(reading.name)
            if metric is None:
                metric = self._metrics[reading.name] = _metric(reading)
            last = self._last.setdefault(reading.name, {})
            for labels in last.keys() - reading.values.keys():  # a model version unloaded
                if isinstance(metric, Gauge):
                    metric.labels(*labels).set(0)
            for labels, value in reading.values.items():
                child = metric.labels(*labels) if labels else metric
                if isinstance(child, Counter):
                    if value > last.get(labels, 0):
                        child.inc(value - last.get(labels, 0))
                else:
                    child.set(value)
            self._last[reading.name] = dict(reading.values)


def _metric(reading: Reading) -> Gauge | Counter:
    """The prometheus-client metric that keeps ``reading`` in the multiprocess folder."""
    if reading.counter:
        return Counter(reading.name, reading.documentation, reading.labels, registry=None)
    return Gauge(
        reading.name, reading.documentation, reading.labels, registry=None, multiprocess_mode=reading.across_processes
    )
