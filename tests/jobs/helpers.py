"""Helpers of the job tests: waiting for a job, the test plugins' environment, and faults
injected the way an operator meets them (PostgreSQL stopped with ``pg_ctl``, a SQLite file
locked by another connection, ``kill -9``).
"""

from __future__ import annotations

import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_PLUGINS, make_plugin_site

PROBE = "/v2/models/jobs_probe"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # what jobs_probe puts before a binary result
SLOW = "/v2/models/slow"


def plugin_env(site: Path) -> dict[str, str]:
    """The fixture plugins, ``jobs_probe`` among them."""
    return make_plugin_site(site, {**TEST_PLUGINS, "jobs_probe": "jobs_probe"})


def wait_for(url: str, statuses: set[str], timeout: float = 60.0, headers: dict | None = None) -> dict:
    """Poll a job until its status is one of ``statuses``; answers other than 200 (a 503
    while the database is away) are waited out too.
    """
    deadline = time.monotonic() + timeout
    job: object = None
    while time.monotonic() < deadline:
        answer = requests.get(url, timeout=10, headers={"Accept": "application/json", **(headers or {})})
        job = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else answer.text
        if answer.status_code == 200 and job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {statuses}: {job}")


def sql(database_url: str, query: str) -> list:
    """The first column of ``query``'s rows, read straight from the database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("sqlite+aiosqlite://", "sqlite://"))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query)).scalars())
    finally:
        engine.dispose()


def kill_9(server) -> None:
    """``kill -9`` the server (its worker processes are left to their own devices)."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


class PostgresControl:
    """Stop and start the PostgreSQL cluster behind ``url`` with ``pg_ctl``, as its operator
    would; the options it was started with are read from its ``postmaster.opts``.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
            self.data = Path(connection.execute("SHOW data_directory").fetchone()[0])
        opts = self.data / "postmaster.opts"
        if not opts.is_file():
            pytest.fail(f"cannot control the PostgreSQL cluster at {url}: no {opts} here")
        words = shlex.split(opts.read_text())
        self.pg_ctl = str(Path(words[0]).with_name("pg_ctl"))
        options = words[1:]
        if "-D" in options:  # pg_ctl gives the data directory itself
            at = options.index("-D")
            del options[at : at + 2]
        self.options = shlex.join(options)

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        self._run("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._run("-l", str(self.data / "log"), "-w", "-o", self.options, "start")

    def running(self) -> bool:
        status = subprocess.run(
            ["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", str(self.data), "status"], capture_output=True
        )
        return status.returncode == 0


class SqliteLock:
    """Another connection holding the write lock of a SQLite file (``BEGIN EXCLUSIVE``):
    every writer waits, then gets ``database is locked``.
    """

    def __init__(self, url: str) -> None:
        self.path = url.split(":///", 1)[1]
        self.connection: sqlite3.Connection | None = None

    def acquire(self) -> None:
        self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.connection.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.connection is not None:
            self.connection.execute("COMMIT")
            self.connection.close()
            self.connection = None


class DatabaseFault:
    """The database of ``url`` made unusable and given back: PostgreSQL stopped and started
    with ``pg_ctl``, or a SQLite file locked by another connection.
    """

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        self.control: SqliteLock | PostgresControl = SqliteLock(url) if self.sqlite else PostgresControl(url)
        self.active = False

    def begin(self) -> None:
        if self.sqlite:
            self.control.acquire()
        else:
            self.control.stop()
        self.active = True

    def end(self) -> None:
        if not self.active:
            return
        if self.sqlite:
            self.control.release()
        else:
            self.control.start()
        self.active = False
