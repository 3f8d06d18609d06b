"""The Ray executor's tests share one real two-node cluster (``cluster.py``), started once
for all of tests/ray/ in a network namespace of its own with only loopback: this process's
thread enters it for tests/ray/ (the servers it starts are born in it) and returns to its
own namespace afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.conftest import TEST_PLUGINS, ServerFactory, ServerURL, make_plugin_site
from tests.ray.cluster import NODE2_GPUS, SLOT, Cluster, loopback_namespace

__all__ = ["NODE2_GPUS", "SLOT", "Cluster"]
T = TypeVar("T")
PLUGINS = {**TEST_PLUGINS, "ray_probe": "ray_probe", "versioned": "versioned"}
RAY_PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="package")
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the nodes and servers: the test plugins installed."""
    env = make_plugin_site(tmp_path_factory.mktemp("ray-site"), PLUGINS)
    env["PYTHONPATH"] = os.pathsep.join([str(RAY_PLUGINS), env["PYTHONPATH"]])
    return env


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory, ray_env: dict[str, str]) -> Iterator[Cluster]:
    """The two-node cluster, in the namespace the tests of tests/ray/ run in."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(loopback_namespace())
        except OSError as error:
            pytest.fail(f"the Ray tests need a network namespace of their own: {error}")
        cluster = Cluster(tmp_path_factory.mktemp("ray"), ray_env)
        stack.callback(cluster.close)
        cluster.start_head()
        cluster.start_node2()
        yield cluster


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
