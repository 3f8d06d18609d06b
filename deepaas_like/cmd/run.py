"""``deepaas-like-run``: serve model plugins over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from aiohttp import web
from oslo_config import cfg

import deepaas_like
from deepaas_like import config, logs
from deepaas_like.api.app_keys import JOBS, MODELS
from deepaas_like.api.metrics import METRICS
from deepaas_like.cmd.process_server.access_log import AccessLines, access_logger_class
from deepaas_like.cmd.process_server.listening import (
    LimitedTCPSite,
    SharedSocket,
    bound_socket,
    default_connection_limit,
    port_free,
)
from deepaas_like.cmd.process_server.metrics import Gathering
from deepaas_like.cmd.process_server.server_lines import Drained, start_line, stop_line
from deepaas_like.cmd.process_server.supervisor import ServerProcess, ServerProcesses
from deepaas_like.exceptions import DeepaasLikeError, StartupError
from deepaas_like.server import http_app
from deepaas_like.serving import draining as drain
from deepaas_like.settings import Settings
from deepaas_like.workers.process import kill_all_workers

__all__ = ["loop_factory", "main", "serve", "supervise"]

LOG = logging.getLogger("deepaas_like")


def main(argv: list[str] | None = None) -> int:
    """Parse options, start the models' workers, and serve until SIGINT/SIGTERM.

    Returns 0, or 1 after printing one ``deepaas-like-run: ...`` line when the server cannot
    start (bad options, a plugin that fails to load, an unusable job database or upload
    directory, an address in use).
    """
    try:
        settings = config.read(
            argv if argv is not None else sys.argv[1:],
            version=deepaas_like.__version__,
            description="Serve DEEPaaS V2 model plugins over HTTP.",
        )
    except cfg.Error as error:
        print(f"deepaas-like-run: {error}", file=sys.stderr)
        return 1
    logs.setup(settings.debug, settings.log_json)
    if settings.server_processes > 1:
        return supervise(settings)
    return serve(settings)


def serve(settings: Settings, process: ServerProcess | None = None) -> int:
    """Serve until SIGINT/SIGTERM in this process: 0, or 1 after printing why it could not
    start. ``process``: this is one of several server processes, which accept on the socket
    it shares instead of binding ``listen-port``, add up their metrics and tell the
    supervisor once they listen.
    """
    sock = None
    if process is None:
        # Bound before any worker starts: a busy port is reported at once, not after every
        # model has been loaded and warmed.
        sock = _bind(settings)
        if sock is None:
            return 1
    try:
        with contextlib.ExitStack() as stack:
            if sock is not None:
                stack.enter_context(sock)
            runner = stack.enter_context(
                asyncio.Runner(loop_factory=loop_factory(settings.event_loop, settings.server_processes))
            )
            app = http_app(settings)
            if process is not None:
                Gathering.attach(app, process.metrics_directory)
            shared, ready = (process.shared, process.ready) if process is not None else (None, None)
            runner.run(_serve(app, settings, shared, ready, sock))
    except DeepaasLikeError as error:
        LOG.error("%s", error.message)
        print(f"deepaas-like-run: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:  # anything else the start-up needs from the system
        LOG.exception("cannot start")
        print(f"deepaas-like-run: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _bind(settings: Settings) -> socket.socket | None:
    """``listen-port`` bound (not listening yet), after checking that ``grpc-port`` is free;
    None after printing why not.
    """
    try:
        sock = bound_socket(settings.listen_ip, settings.listen_port)
    except OSError as error:
        print(f"deepaas-like-run: cannot listen on {_address(settings)}: {error.strerror or error}", file=sys.stderr)
        return None
    if settings.grpc_port and not port_free(settings.listen_ip, settings.grpc_port):
        sock.close()
        print(
            f"deepaas-like-run: cannot listen on {settings.listen_ip}:{settings.grpc_port} for gRPC "
            "(--grpc-port): the port is in use",
            file=sys.stderr,
        )
        return None
    return sock


def loop_factory(name: str, processes: int = 1) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``event-loop`` names: uvloop's, or None for asyncio's own. ``auto`` is
    uvloop where it can be imported, for one server process; for several, asyncio's: with
    uvloop, two processes sharing 2 cores showed p99 pauses of 10 to 280 ms at 8 clients
    that asyncio's loop, and uvloop in one process, did not (cause not found). Raises
    :class:`StartupError` for ``uvloop`` when it cannot be imported.
    """
    if name == "asyncio" or (name == "auto" and processes > 1):
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise StartupError("event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def _address(settings: Settings) -> str:
    return f"{settings.listen_ip}:{settings.listen_port}"


def supervise(settings: Settings) -> int:
    """Serve with ``server-processes`` processes on one listening socket (see
    :mod:`deepaas_like.cmd.process_server.supervisor`): 0 after SIGINT/SIGTERM, 1 when one
    of them could not start.
    """
    sock = _bind(settings)
    if sock is None:
        return 1
    with sock:
        return ServerProcesses(settings, SharedSocket(sock, settings.server_processes), serve).run()


async def _serve(
    app: web.Application,
    settings: Settings,
    shared: SharedSocket | None = None,
    ready: int | None = None,
    sock: socket.socket | None = None,
) -> None:
    """aiohttp's ``run_app``, on a site that bounds open connections (``max-connections``),
    listening on ``sock`` (bound already) or on ``shared``.

    SIGINT and SIGTERM stop accepting, give in-flight requests ``shutdown-timeout`` seconds,
    then run the clean-up: running jobs are marked interrupted, workers stop. The whole
    shutdown, clean-up included, takes at most ``shutdown-timeout`` seconds (see
    :func:`_stop_within`).
    """
    access_log = logging.getLogger("deepaas_like.access")
    lines = AccessLines(access_log, structured=settings.log_json)
    runner = web.AppRunner(
        app,
        handle_signals=False,  # ours below: the clean-up must run before any task is cancelled
        access_log=access_log if settings.access_log else None,
        access_log_class=access_logger_class(lines),
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        handler_cancellation=True,  # a client that goes away leaves the queue
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def stop_on(signum: int) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_on, signum)
    started = False
    try:
        limit = settings.max_connections or default_connection_limit()
        site = LimitedTCPSite(runner, settings.listen_ip, settings.listen_port, limit, shared=shared, sock=sock)
        # What start-up made lives as long as the server: out of the collector's sight, a full
        # collection no longer walks it (tens of ms here, a pause every request waits out).
        gc.collect()
        gc.freeze()
        await site.start()
        started = True
        kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        served = app[MODELS]
        LOG.info("%s", start_line(settings, list(served), site.name, limit, kind))
        if ready is not None:
            os.write(ready, b".")
        await stop.wait()
    finally:
        began, before = loop.time(), _answered(app)
        await _stop_within(runner, settings.shutdown_timeout)
        lines.flush()
        if started:
            _log_stop(app, stopped_by[0] if stopped_by else "request", loop.time() - began, before)


def _answered(app: web.Application) -> tuple[int, int]:
    """HTTP requests this process has answered, and those answered 503 (its metrics)."""
    answered = refused = 0
    for family in app[METRICS].requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                answered += int(sample.value)
                refused += int(sample.value) if sample.labels.get("status") == "503" else 0
    return answered, refused


def _log_stop(app: web.Application, signal_name: str, seconds: float, before: tuple[int, int]) -> None:
    """The shutdown line: what stopped the server, in how many seconds, the requests answered
    (and refused) since ``before`` (:func:`_answered` when the drain began), the jobs stopped."""
    answered, refused = (after - earlier for after, earlier in zip(_answered(app), before, strict=True))
    stopped = app[JOBS].stopped if JOBS in app else None
    LOG.info("%s", stop_line(signal_name, seconds, Drained(answered, refused), stopped))


async def _stop_within(runner: web.AppRunner, seconds: float) -> None:
    """Run ``runner``'s shutdown and clean-up so that the process exits within ``seconds``.

    Of the last tenth of the time (at most :data:`drain.ANSWER_TIME`), the first half is for
    the drain's 503 answers to requests still in flight; then workers still running (a busy
    one whose call cannot finish, or an idle one asked to leave that does not: a plugin's
    non-daemon thread, a slow exit handler) are killed, which ends what waits for them; a
    quarter later, whatever clean-up is left is abandoned (its jobs are reported interrupted
    by the next start, as after a crash), keeping the last quarter for the process to exit.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    reserve = min(drain.ANSWER_TIME, seconds / 10)
    cleanup = asyncio.ensure_future(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=max(end - reserve / 2 - loop.time(), 0))
    if not done:
        killed = kill_all_workers()
        if killed:
            LOG.warning(
                "killed %d worker process(es) still running near the end of the shutdown timeout (%g s)",
                killed,
                seconds,
            )
        done, _ = await asyncio.wait({cleanup}, timeout=max(end - reserve / 4 - loop.time(), 0))
    if not done:
        LOG.warning("the clean-up did not finish within the shutdown timeout (%g s); stopping without it", seconds)
        cleanup.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await cleanup
        return
    cleanup.result()  # its error, if any, as before


if __name__ == "__main__":
    sys.exit(main())
