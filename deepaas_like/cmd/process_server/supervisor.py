"""Several server processes on one listening socket (``--server-processes``).

One event loop parses, validates and answers every request of a server, so HTTP work is
bounded by one core however many workers run the models. With ``server-processes`` N the
first process, the supervisor, binds ``listen-port`` once and forks N server processes that
accept on that socket, each new connection going to the one that holds the fewest (see
:mod:`deepaas_like.cmd.process_server.listening`). Each is a whole server: its own workers
(``--workers`` per model in each), job runner (instance name ``NAME/i``, so heartbeats and
interrupted jobs work as for separate instances), gRPC server (on ``grpc-port`` with
``SO_REUSEPORT``) and drain. Their metrics are gathered by
prometheus-client's multiprocess mode in a temporary folder (see
:mod:`deepaas_like.cmd.process_server.metrics`).

The supervisor serves nothing: it forwards SIGINT/SIGTERM and waits for the processes to
stop, starts a process again when one that had started dies (its jobs are reported
interrupted at once, as for a restarted server of the same name), and, when one cannot
start, stops the others and exits 1. A supervisor killed with SIGKILL takes them with it:
each gets SIGTERM (``PR_SET_PDEATHSIG``) and shuts down cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable

from deepaas_like.cmd.process_server.listening import SharedSocket
from deepaas_like.cmd.process_server.metrics import forget_process, gather_across_processes
from deepaas_like.settings import Settings
from deepaas_like.workers.process import signal_on_parent_death

__all__ = ["RESTART_DELAY", "Serve", "ServerProcess", "ServerProcesses"]

LOG = logging.getLogger(__name__)

#: Seconds before a server process that died is started again (so that one that dies at
#: once does not take a core restarting).
RESTART_DELAY = 1.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


@dataclasses.dataclass(frozen=True)
class ServerProcess:
    """What the supervisor tells a server process it forks."""

    #: The listening socket shared by the processes, and their connection counts.
    shared: SharedSocket
    #: A pipe's write end: one byte once the process listens.
    ready: int
    #: The folder where the processes' metrics are added up
    #: (:class:`deepaas_like.cmd.process_server.metrics.Gathering`).
    metrics_directory: str


#: ``serve(settings, process)``: serve in this process until SIGINT/SIGTERM on the shared
#: socket, writing one byte to ``process.ready`` once listening; returns the exit status.
Serve = Callable[[Settings, ServerProcess], int]


class ServerProcesses:
    """``settings.server_processes`` forks of this process, each running ``serve`` on ``shared``."""

    def __init__(self, settings: Settings, shared: SharedSocket, serve: Serve) -> None:
        self.settings = settings
        self.shared = shared
        self.serve = serve
        self.children: dict[int, int] = {}  # pid -> index
        self._metrics_dir = ""
        self._ready = (-1, -1)

    def run(self) -> int:
        """Start the processes and supervise them until SIGINT/SIGTERM: 0, or 1 when one
        could not start (it printed why)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self._metrics_dir = tempfile.mkdtemp(prefix="deepaas-like-metrics-")
        self._ready = os.pipe()
        try:
            for index in range(self.settings.server_processes):
                self._start(index)
            status = self._wait_started()
            if status is None:
                LOG.info("======== %d server processes answer ========", len(self.children))
                status = self._supervise()
            return status
        finally:
            self._stop()
            os.close(self._ready[0])
            os.close(self._ready[1])
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _start(self, index: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self.children[pid] = index
            return
        status = 1
        try:  # the server process: never returns into the supervisor's code
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            if not signal_on_parent_death(signal.SIGTERM, supervisor):
                os._exit(1)
            os.close(self._ready[0])
            gather_across_processes(self._metrics_dir)
            settings = dataclasses.replace(self.settings, instance=f"{self.settings.instance}/{index}")
            self.shared.index = index
            self.shared.record(0)
            status = self.serve(settings, ServerProcess(self.shared, self._ready[1], self._metrics_dir))
        except BaseException:  # noqa: BLE001 - reported here: nothing above this frame may run
            LOG.exception("server process %d failed", index)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _wait_started(self) -> int | None:
        """None once every process listens; 1 if one ended first, 0 on SIGINT/SIGTERM."""
        started = 0
        while started < len(self.children):
            readable, _, _ = select.select([self._ready[0]], [], [], 0.2)
            if readable:
                started += len(os.read(self._ready[0], 64))
            received = signal.sigtimedwait(_SIGNALS, 0)
            if received is None:
                continue
            if received.si_signo != signal.SIGCHLD:
                return 0
            if self._reap():
                return 1
        return None

    def _supervise(self) -> int:
        while True:
            received = signal.sigwaitinfo(_SIGNALS)
            if received.si_signo != signal.SIGCHLD:
                return 0
            for index, status in self._reap():
                LOG.error(
                    "server process %d ended (%s); starting it again in %g s", index, _describe(status), RESTART_DELAY
                )
                if signal.sigtimedwait({signal.SIGINT, signal.SIGTERM}, RESTART_DELAY) is not None:
                    return 0
                self._start(index)

    def _reap(self) -> list[tuple[int, int]]:
        """(index, wait status) of each server process that ended."""
        ended = []
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            index = self.children.pop(pid, None)
            if index is not None:
                forget_process(pid, self._metrics_dir)
                self.shared.gone(index)
                ended.append((index, status))
        return ended

    def _stop(self) -> None:
        """SIGTERM to every server process, then wait for each (they take up to
        ``shutdown-timeout`` seconds)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if self.children.pop(pid, None) is not None:
                forget_process(pid, self._metrics_dir)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
