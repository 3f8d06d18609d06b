"""Housekeeping of the job database shared by several instances: this instance's
heartbeat, the sweep that reports the jobs of instances that stopped answering, jobs
claimed here but never started, and the removal of old finished jobs (retention).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any

from deepaas_like.exceptions import DatabaseUnavailable
from deepaas_like.jobs.execution import Execution
from deepaas_like.jobs.result_files import remove_uploads
from deepaas_like.jobs.states import ERROR
from deepaas_like.jobs.store import UNTRACKED, JobStore

__all__ = ["Housekeeping"]

LOG = logging.getLogger(__name__)


class Housekeeping:
    """Keeps the jobs of ``execution``'s instance honest on a shared database.

    Every ``heartbeat_interval`` seconds this instance records that it is alive, and marks
    the running jobs of instances silent for ``heartbeat_expiry`` seconds as interrupted.
    Finished jobs are kept ``retention`` seconds (0: forever), with their result files.
    """

    def __init__(
        self, execution: Execution, heartbeat_interval: float, heartbeat_expiry: float, retention: float
    ) -> None:
        self.execution = execution
        self.store: JobStore = execution.store
        self.owner = execution.owner
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_expiry = heartbeat_expiry
        self.retention = retention
        self._host, self._pid = socket.gethostname(), os.getpid()

    async def start(self) -> None:
        """Say this instance is alive, report its own interrupted jobs (it is starting
        again) and those of instances whose heartbeat expired.
        """
        await self.store.beat(self.owner, self._host, self._pid)
        interrupted = await self.store.mark_interrupted(self.owner)
        if interrupted:
            LOG.warning("%d job(s) were running when %s last stopped: marked interrupted", interrupted, self.owner)
        await self._sweep()

    def loops(self) -> builtins.list[Coroutine[Any, Any, None]]:
        """What runs until the server stops: the heartbeat, and the retention if any."""
        return [self._heartbeat(), *([self._expire()] if self.retention > 0 else [])]

    async def leave(self) -> None:
        """Forget this instance's heartbeat (it stops with no job of its own left running)."""
        await self.store.leave(self.owner)

    async def upload_owners(self) -> tuple[set[str], set[tuple[str, int]]]:
        """What keeps an upload folder alive: the folders of pending and running jobs, and
        the ``(host, pid)`` of the live instances (whose requests may be uploading).
        """
        return await self.store.active_upload_dirs(), await self.store.live_processes(self.heartbeat_expiry)

    async def _sweep(self) -> None:
        lost = await self.store.sweep(self.heartbeat_expiry, exclude=self.owner)
        for job in lost:
            LOG.warning(
                "%s job %s of %s was running on %s, whose heartbeat expired: marked interrupted",
                job.kind,
                job.uuid,
                job.model,
                job.owner,
            )
            remove_uploads(job.upload_dir)

    async def untracked(self) -> None:
        """Report the jobs claimed here over a minute ago that nothing here runs."""
        # A claim whose commit landed but whose answer was lost (the connection broke just
        # then) leaves a job "running" here that nothing runs: it must not look alive.
        # Claims take milliseconds; a minute leaves no doubt.
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=60)
        for uuid in await self.store.running_of(self.owner, cutoff):
            if uuid not in self.execution.running and await self.store.finish(uuid, ERROR, message=UNTRACKED):
                LOG.error("job %s was claimed by this instance but never started: marked interrupted", uuid)
                self.execution.feeds.changed(uuid)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.store.beat(self.owner, self._host, self._pid)
                await self._sweep()
                await self.untracked()
            except DatabaseUnavailable:
                pass  # the database's policy logs when it goes and comes back
            except Exception:  # noqa: BLE001 - the next beat tries again
                LOG.exception("cannot record this instance's heartbeat")

    def _remove_results(self, uuids: builtins.list[str]) -> None:
        for uuid in uuids:
            self.execution.results.remove(uuid)

    async def _expire(self) -> None:
        while True:
            cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self.retention)
            try:
                removed: builtins.list[str] = []
                while batch := await self.store.delete_finished_before(cutoff):
                    removed += batch
                    await asyncio.to_thread(self._remove_results, batch)
                if removed:
                    LOG.info("removed %d job(s) finished before %s", len(removed), cutoff)
            except DatabaseUnavailable:
                pass
            except Exception:  # noqa: BLE001
                LOG.exception("cannot remove old jobs")
            await asyncio.sleep(min(max(self.retention / 10, 1.0), 60.0))
