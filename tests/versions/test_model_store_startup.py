"""``deepaas-like-run`` refuses, at start-up, a ``--model-store`` where versions could never
live, naming the option and the real cause (not the listening address).
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.cmd.test_run import start as start_server
from tests.conftest import free_port
from tests.versions.helpers import MODEL


def start(tmp_path: Path, env: dict[str, str], store: str) -> subprocess.CompletedProcess:
    # A liveness bound: the server must stop by itself, well before this.
    database = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    return start_server(tmp_path, "--database-url", database, "--model-store", store, model=MODEL, env=env, timeout=180)


def read_only_archive(tmp_path: Path) -> str:
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("models/README", "versions go here")
    return f"zip://models::{archive}"


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (lambda tmp_path: "memory://models", "is in memory, which each worker process has of its own"),
        (lambda tmp_path: f"ftp://127.0.0.1:{free_port()}/models", "ConnectionRefusedError"),
        (lambda tmp_path: "zip://models", "IsADirectoryError"),
        (read_only_archive, "write() requires mode"),
    ],
    ids=["memory", "ftp-unreachable", "zip-without-archive", "zip-read-only"],
)
def test_a_store_where_versions_cannot_live_stops_the_start(versioned_env, tmp_path, store, reason):
    url = store(tmp_path)
    process = start(tmp_path, versioned_env, url)
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    [line] = [line for line in process.stderr.splitlines() if line.startswith("deepaas-like-run: ")]
    assert "model-store" in line and url in line and reason in line, line
    assert "cannot listen" not in line, line
