"""``deepaas-like-run``: serve model plugins over HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web
from oslo_config import cfg

import deepaas_like
from deepaas_like import config, logs
from deepaas_like.api.access_log import AccessLines, access_logger_class
from deepaas_like.api.app import create_app
from deepaas_like.api.listening import LimitedTCPSite, SharedSocket, default_connection_limit
from deepaas_like.cmd.processes import ServerProcesses, bound_socket, port_free
from deepaas_like.exceptions import DeepaasLikeError, StartupError
from deepaas_like.settings import Settings

LOG = logging.getLogger("deepaas_like")


def main(argv: list[str] | None = None) -> int:
    """Parse options, start the models' workers, and serve until SIGINT/SIGTERM.

    Returns 0, or 1 after printing one ``deepaas-like-run: ...`` line when the server cannot
    start (bad options, a plugin that fails to load, an unusable job database or upload
    directory, an address in use).
    """
    conf = cfg.ConfigOpts()
    config.register(conf, show_defaults=True)
    try:
        conf(
            argv if argv is not None else sys.argv[1:],
            project="deepaas_like",
            version=deepaas_like.__version__,
            description="Serve DEEPaaS V2 model plugins over HTTP.",
            epilog=config.EPILOG,
        )
        settings = config.settings(conf)
    except cfg.Error as error:
        print(f"deepaas-like-run: {error}", file=sys.stderr)
        return 1
    logs.setup(settings.debug, settings.log_json)
    if settings.server_processes > 1:
        return supervise(settings)
    return serve(settings)


def serve(settings: Settings, shared: SharedSocket | None = None, ready: int | None = None) -> int:
    """Serve until SIGINT/SIGTERM in this process: 0, or 1 after printing why it could not
    start. ``shared`` is a socket to accept on with other server processes instead of
    binding ``listen-port``; ``ready`` a pipe's write end that gets one byte once the
    server listens.
    """
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop, settings.server_processes)) as runner:
            runner.run(_serve(create_app(settings), settings, shared, ready))
    except DeepaasLikeError as error:
        LOG.error("%s", error.message)
        print(f"deepaas-like-run: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:  # the address is taken, or cannot be bound
        print(f"deepaas-like-run: cannot listen on {_address(settings)}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


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
    :mod:`deepaas_like.cmd.processes`): 0 after SIGINT/SIGTERM, 1 when one of them could
    not start.
    """
    try:
        sock = bound_socket(settings.listen_ip, settings.listen_port)
    except OSError as error:
        print(f"deepaas-like-run: cannot listen on {_address(settings)}: {error.strerror or error}", file=sys.stderr)
        return 1
    if settings.grpc_port and not port_free(settings.listen_ip, settings.grpc_port):
        print(
            f"deepaas-like-run: cannot listen on {settings.listen_ip}:{settings.grpc_port} for gRPC "
            "(--grpc-port): the port is in use",
            file=sys.stderr,
        )
        return 1
    with sock:
        return ServerProcesses(settings, SharedSocket(sock, settings.server_processes), serve).run()


async def _serve(
    app: web.Application, settings: Settings, shared: SharedSocket | None = None, ready: int | None = None
) -> None:
    """aiohttp's ``run_app``, on a site that bounds open connections (``max-connections``).

    SIGINT and SIGTERM stop accepting, give in-flight requests ``shutdown-timeout`` seconds,
    then run the clean-up: running jobs are marked interrupted, workers stop.
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
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        limit = settings.max_connections or default_connection_limit()
        site = LimitedTCPSite(runner, settings.listen_ip, settings.listen_port, limit, shared=shared)
        # What start-up made lives as long as the server: out of the collector's sight, a full
        # collection no longer walks it (tens of ms here, a pause every request waits out).
        gc.collect()
        gc.freeze()
        await site.start()
        kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        LOG.info("======== Running on %s (at most %d connections, %s event loop) ========", site.name, limit, kind)
        if ready is not None:
            os.write(ready, b".")
        await stop.wait()
    finally:
        await runner.cleanup()
        lines.flush()


if __name__ == "__main__":
    sys.exit(main())
