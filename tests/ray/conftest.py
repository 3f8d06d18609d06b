"""A real local Ray cluster of two nodes for the Ray executor's tests, started once for all
of tests/ray/ (a second raylet on this machine is a second node).

Ray binds every interface and probes an outside address to learn its own: the cluster,
the servers under test and the test's own requests all live in a network namespace of
their own that has only loopback. This process's thread enters it for tests/ray/ (the
processes it starts are born in it) and returns to its own namespace afterwards. The nodes
are ``ray start --block`` processes, stopped by their pid (never ``ray stop``, which stops
every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.conftest import TEST_PLUGINS, ServerFactory, ServerURL, free_port, make_plugin_site

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
PLUGINS = {**TEST_PLUGINS, "ray_probe": "ray_probe"}
RAY_PLUGINS = Path(__file__).parent / "plugins"
#: What the second node offers beside its CPU: two fake GPUs and a label.
NODE2_GPUS = 2
NODE2_LABEL = "zone=b"


@contextlib.contextmanager
def loopback_namespace() -> Iterator[None]:
    """Run this thread (and the processes it starts) in a fresh network namespace with only
    loopback up; back in the original one afterwards. Needs root (CAP_SYS_ADMIN).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            pytest.fail(f"the Ray tests need a network namespace of their own (run as root): {os.strerror(error)}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0)))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
        yield
    finally:
        if libc.setns(original, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
        os.close(original)


class Cluster:
    """Two Ray nodes on 127.0.0.1: the head (1 CPU) and node 2 (1 CPU, 2 fake GPUs, label
    zone=b), each a ``ray start --block`` process of ours.
    """

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths live under it (a Unix socket path has at most 107 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="dlr-", dir="/tmp")
        self.env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.head: subprocess.Popen[bytes] | None = None
        self.node2: subprocess.Popen[bytes] | None = None

    def _start(self, name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}-{time.monotonic_ns()}.log"
        command = [shutil.which("ray") or "ray", "start", "--block", "--num-cpus", "1", "--disable-usage-stats"]
        process = subprocess.Popen(
            [*command, *arguments], env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"Ray node {name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        return process

    def start_head(self) -> None:
        self.head = self._start(
            "head",
            ["--head", "--port", str(self.port), "--temp-dir", self.temp_dir, "--include-dashboard", "false"],
        )

    def start_node2(self) -> None:
        self.node2 = self._start(
            "node2",
            ["--address", self.address, "--num-gpus", str(NODE2_GPUS), "--labels", NODE2_LABEL],
        )

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None) -> None:
        # SIGTERM: the node's processes are stopped by the ``ray start --block`` that started them.
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_node2(self) -> None:
        self._stop(self.node2)
        self.node2 = None

    def stop_head(self) -> None:
        self._stop(self.head)
        self.head = None

    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.head, self.node2))

    def ensure_running(self) -> None:
        """Both nodes up (a test that stopped one may leave it so)."""
        if self.head is None or self.head.poll() is not None:
            self.stop_node2()  # a node outlives its head only to find it gone
            self.start_head()
        if self.node2 is None or self.node2.poll() is not None:
            self.start_node2()

    def leftovers(self) -> list[int]:
        """Pids of processes of this cluster still running (their command names its temp dir)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if self.temp_dir.encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        self.stop_node2()
        self.stop_head()
        deadline = time.monotonic() + 15
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.leftovers():  # ours: they name our temp dir
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the nodes and servers: the test plugins installed."""
    env = make_plugin_site(tmp_path_factory.mktemp("ray-site"), PLUGINS)
    env["PYTHONPATH"] = os.pathsep.join([str(RAY_PLUGINS), env["PYTHONPATH"]])
    return env


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory, ray_env: dict[str, str]) -> Iterator[Cluster]:
    """The two-node cluster, in the namespace the tests of tests/ray/ run in."""
    with loopback_namespace():
        cluster = Cluster(tmp_path_factory.mktemp("ray"), ray_env)
        try:
            cluster.start_head()
            cluster.start_node2()
            yield cluster
        finally:
            cluster.close()


class RayServers(ServerFactory):
    """Starts ``deepaas-like-run --executor ray`` servers on the cluster."""

    def __init__(self, workdir: Path, cluster: Cluster, env: dict[str, str]) -> None:
        super().__init__(workdir)
        self.cluster = cluster
        self.env = env

    def __call__(  # type: ignore[override]
        self, *models: str, args: tuple[str, ...] = (), config: str = "", env: dict[str, str] | None = None
    ) -> ServerURL:
        self.cluster.ensure_running()
        options = ["--executor", "ray", "--ray-address", self.cluster.address, "--ray-num-cpus", "0.1", *args]
        if config:
            path = self.workdir / f"config-{time.monotonic_ns()}.conf"
            path.write_text(config)
            options += ["--config-file", str(path)]
        return super().__call__(*models, env={**self.env, **(env or {})}, args=options)


@pytest.fixture(scope="module")
def ray_servers(
    tmp_path_factory: pytest.TempPathFactory, cluster: Cluster, ray_env: dict[str, str]
) -> Iterator[RayServers]:
    """Factory of servers on the cluster shared by a module's tests; stopped at its end."""
    factory = RayServers(tmp_path_factory.mktemp("ray-servers"), cluster, ray_env)
    yield factory
    factory.close()


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Call ``check()`` until it returns something true, and return that; fail naming
    ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def answered(
    what: str, call: Callable[[], requests.Response], status: int = 200, timeout: float = 60.0
) -> requests.Response:
    """Repeat the request ``call()`` until it is answered ``status``; the response."""
    last: list[requests.Response] = []

    def check() -> requests.Response | None:
        last[:] = [call()]
        return last[0] if last[0].status_code == status else None

    try:
        return wait_for(what, check, timeout)
    except pytest.fail.Exception:
        pytest.fail(f"{what}: not within {timeout:g} s; last answer {last[0].status_code} {last[0].text[:300]}")


def metric(server: str, name: str, labels: str = "") -> float | None:
    """A value from ``/metrics`` (``labels`` as they print, e.g. ``model="demo"``), or None."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in requests.get(server + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def ready(server: str) -> dict | None:
    """The ``/readyz`` document when ready, else None."""
    answer = requests.get(server + "/readyz", timeout=10)
    return answer.json() if answer.status_code == 200 else None
