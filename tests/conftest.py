"""Shared fixtures: real ``deepaas-like-run`` servers on 127.0.0.1 and test plugins made
discoverable through real entry points (a ``.dist-info`` folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
NAMESPACE = "deepaas.v2.model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class ServerURL(str):
    """The base URL of a running server ("http://127.0.0.1:PORT"), with its process,
    upload directory and database URL; :meth:`stop` ends it with SIGINT.
    """

    process: subprocess.Popen
    upload_dir: Path
    database_url: str
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    models: Sequence[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    database_url: str | None = None,
    timeout: float = 120.0,
    program: str = "deepaas-like-run",
) -> ServerURL:
    """Start ``program`` (``deepaas-like-run``, or its path in another environment) and wait
    until ``GET /`` answers; raise with its log if it exits.
    """
    port = free_port()
    upload_dir = workdir / f"uploads-{port}"
    upload_dir.mkdir(parents=True)
    database_url = database_url or f"sqlite:///{workdir / 'jobs.sqlite'}"
    command = [
        shutil.which(program) or program,
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--database-url",
        database_url,
        "--upload-dir",
        str(upload_dir),
        *(f"--model-name={name}" for name in models),
        *args,
    ]
    log = workdir / f"server-{port}.log"
    # The server's per-user state (default job results directory) stays in the test's folder.
    state = {"XDG_STATE_HOME": str(workdir / "state")}
    process = subprocess.Popen(
        command, env={**os.environ, **state, **(env or {})}, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = ServerURL(f"http://127.0.0.1:{port}")
    url.process, url.upload_dir, url.database_url, url.log = process, upload_dir, database_url, log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            requests.get(url + "/", timeout=1)
            return url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not answer within {timeout} s:\n{log.read_text()}")


class ServerFactory:
    """Starts servers in ``workdir``; :meth:`close` stops them and checks no upload is left."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[ServerURL] = []

    def __call__(
        self, *models: str, env: dict[str, str] | None = None, args: Sequence[str] = (), database_url: str | None = None
    ) -> ServerURL:
        server = start_server(models, self.workdir, env=env, args=args, database_url=database_url)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for server in self.servers:
            assert list(server.upload_dir.iterdir()) == [], f"uploads left behind in {server.upload_dir}"


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory: ``run_server(*model_names, env=None, args=())`` -> :class:`ServerURL`.

    Every server started is stopped at teardown, and must have left no upload behind.
    """
    factory = ServerFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like :func:`run_server`, for servers shared by the tests of one module."""
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.close()


def make_plugin_site(site: Path, plugins: dict[str, str], namespace: str = NAMESPACE) -> dict[str, str]:
    """Make ``plugins`` (entry-point name -> ``module`` or ``module:Class`` in
    tests/fixtures/plugins) discoverable; returns the env that exposes them.
    """
    # A name of its own per site: importlib.metadata keeps one distribution per name, so two
    # sites of one name on sys.path would hide each other's entry points.
    name = "deepaas_like_test_plugins_" + hashlib.sha256(str(site).encode()).hexdigest()[:12]
    dist = site / f"{name}-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0\n")
    lines = [f"[{namespace}]"] + [f"{name} = {target}" for name, target in plugins.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join([str(site), str(FIXTURE_PLUGINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


TEST_PLUGINS = {
    "deepaas_style": "deepaas_style",
    "class_style": "class_style:Model",
    "failing": "failing",
    "predict_only": "predict_only",
    "broken": "broken",
    "batching": "batching",
    "slow": "slow",
    "crashy": "crashy",
    "warm_fails": "warm_fails",
    "ai4os_style": "ai4os_style",
    "raw_png": "raw_png",
    "unruly": "unruly",
    "catch_error": "catch_error",
    "bad_arguments": "bad_arguments",
}


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """Env (``PYTHONPATH``) under which the test plugins in tests/fixtures/plugins are installed."""
    return make_plugin_site(tmp_path / "site", TEST_PLUGINS)


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the test plugins for this process (and the workers it spawns)."""
    env = make_plugin_site(tmp_path / "site", TEST_PLUGINS)
    for entry in reversed(env["PYTHONPATH"].split(os.pathsep)):
        monkeypatch.syspath_prepend(entry)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    _forget_entry_points(monkeypatch)


def _forget_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """stevedore keeps the entry points it found per namespace for the whole process: start
    from none, so that this test's plugins are found (and the next test's are not hidden).
    """
    from stevedore.extension import ExtensionManager

    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})


POSTGRES_URL_ENV = "DEEPAAS_LIKE_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "DEEPAAS_LIKE_REQUIRE_POSTGRES"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """Base URL of a real PostgreSQL: ``$DEEPAAS_LIKE_TEST_POSTGRES_URL``, else a throwaway
    cluster on 127.0.0.1 started by scripts/postgres-throwaway.sh (Debian's PostgreSQL, as
    root), else None.
    """
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        yield url
        return
    if os.geteuid() != 0 or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        yield None
        return
    script = ROOT / "scripts" / "postgres-throwaway.sh"
    started = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "PGPORT_THROWAWAY": str(free_port())},
        capture_output=True,
        text=True,
        check=True,
    )
    url, directory = started.stdout.split()
    yield url
    subprocess.run(["bash", str(script), "stop", directory], check=False)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty job database: a SQLite file, or a new database on real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'jobs.sqlite'}"
        return
    yield from _postgres_database(request)


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on real PostgreSQL."""
    yield from _postgres_database(request)


def _postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    server = request.getfixturevalue("postgres_server")
    if server is None:
        message = f"no PostgreSQL here: set {POSTGRES_URL_ENV} or install Debian's postgresql and run as root"
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    name = f"deepaas_like_test_{os.urandom(6).hex()}"
    admin = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config: pytest.Config) -> None:
    # Plugins under test must not reach a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.dont_write_bytecode = True


@pytest.fixture
def serve_in_process(aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Factory: ``await serve_in_process(*model_names, **settings)`` -> an aiohttp
    ``TestClient`` of :func:`deepaas_like.server.http_app` with the plugins running in
    this process (:class:`~deepaas_like.workers.inprocess.InProcessPool`): the whole HTTP
    side (routes, handlers, security, metrics, jobs on SQLite) without a server process.
    The test plugins of tests/fixtures/plugins (``jobs_probe`` too) are installed.
    """
    env = make_plugin_site(tmp_path / "site", {**TEST_PLUGINS, "jobs_probe": "jobs_probe"})
    for entry in reversed(env["PYTHONPATH"].split(os.pathsep)):
        monkeypatch.syspath_prepend(entry)
    _forget_entry_points(monkeypatch)
    from deepaas_like.server import http_app
    from deepaas_like.settings import Settings
    from deepaas_like.workers.inprocess import InProcessPool

    async def serve(*models: str, **fields: Any) -> Any:
        uploads = tmp_path / "uploads"
        uploads.mkdir(exist_ok=True)
        fields = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'jobs.sqlite'}",
            "upload_dir": str(uploads),
            "instance": "in-process",
            **fields,
        }
        settings = Settings(model_names=models, **fields)

        def pools(name: str, kind: str, size: int) -> InProcessPool:
            model = settings.for_model(name)
            return InProcessPool(name, settings.namespace, warm=model.warm, max_result_size=model.max_result_size)

        return await aiohttp_client(http_app(settings, pools))

    return serve
