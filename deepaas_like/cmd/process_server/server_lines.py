"""The server's start and shutdown lines: one line each, saying where it listens and what
it uses, then what its shutdown drained or interrupted.

A start::

    serving demo at http://127.0.0.1:5000 (REST http://127.0.0.1:5000/v2/, Swagger UI
    http://127.0.0.1:5000/api, web page http://127.0.0.1:5000/web/); job database sqlite+aiosqlite:////home/me/.local/state/
    deepaas_like/jobs.sqlite (the default: shared by every server of this user;
    --database-url for one of its own); model store /home/me/.local/state/deepaas_like/
    model-store; at most 10000 connections, uvloop event loop

(on one line), and its shutdown::

    stopped on SIGTERM in 1.42 s: 3 requests answered while draining (0 with 503); jobs:
    1 train interrupted, 2 pending left for the next server
"""

from __future__ import annotations

import dataclasses

from deepaas_like.jobs.service import JobsStopped
from deepaas_like.settings import Settings, default_database_url, default_model_store

__all__ = ["Drained", "shown_url", "start_line", "stop_line"]


def shown_url(url: str) -> str:
    """A database URL as a log may show it: its password masked (``***``)."""
    from sqlalchemy.engine import make_url  # imported here: as settings.py does

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL that does not parse has failed the start already
        return url


def start_line(settings: Settings, models: list[str], address: str, connections: int, loop: str) -> str:
    """The start line of a server serving ``models`` at ``address`` (``http://host:port``)
    with at most ``connections`` open connections on the ``loop`` event loop (its name)."""
    base = address + settings.base_path
    urls = [f"REST {base}/v2/"]
    if settings.doc_endpoint:
        urls.append(f"Swagger UI {base}/api")
        urls.append(f"web page {base}/web/")
    if settings.grpc_port:
        urls.append(f"gRPC {settings.listen_ip}:{settings.grpc_port}")
    database = shown_url(settings.database_url)
    if settings.database_url == default_database_url():
        database += " (the default: shared by every server of this user; --database-url for one of its own)"
    store = settings.model_store or default_model_store(settings.database_url)
    return (
        f"serving {', '.join(models) or 'no model'} at {address} ({', '.join(urls)}); job database {database}; "
        f"model store {store}; at most {connections} connections, {loop} event loop"
    )


@dataclasses.dataclass(frozen=True)
class Drained:
    """HTTP requests answered between the stop signal and the end, ``refused`` of them with 503."""

    answered: int
    refused: int


def stop_line(signal_name: str, seconds: float, drained: Drained, jobs: JobsStopped | None) -> str:
    """The shutdown line: the signal that stopped the server, the ``seconds`` it took, the
    requests answered meanwhile and what became of the jobs (None: the jobs never started)."""
    line = (
        f"stopped on {signal_name} in {seconds:.2f} s: {drained.answered} request(s) answered while draining "
        f"({drained.refused} with 503)"
    )
    if jobs is None:
        return line
    parts = [f"{count} {kind} interrupted" for kind, count in sorted(jobs.interrupted.items())] or ["none interrupted"]
    if jobs.abandoned:
        parts.append(f"{jobs.abandoned} whose end could not be recorded (reported interrupted at the next start)")
    if jobs.pending:
        parts.append(f"{jobs.pending} pending left for the next server")
    return f"{line}; jobs: {', '.join(parts)}"
