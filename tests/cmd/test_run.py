"""``deepaas-like-run`` start-up: the URL forms users write, and every start-up failure as
one ``deepaas-like-run: ...`` line with exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import requests

from deepaas_like.settings import SECTIONS
from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site


def start(
    tmp_path,
    *args: str,
    model: str = "predict_only",
    plugins: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run ``deepaas-like-run`` serving ``model`` (of ``plugins``, default the test plugins)
    on ``port`` (default a free one) until it exits; ``timeout`` is a liveness bound.
    """
    site = make_plugin_site(tmp_path / "run-site", plugins or TEST_PLUGINS)
    command = [
        "deepaas-like-run",
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port or free_port()),
        "--model-name",
        model,
        *args,
    ]
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.run(
        command, env={**os.environ, **state, **site, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_failure(process: subprocess.CompletedProcess, *words: str) -> None:
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("deepaas-like-run: ")]
    assert len(lines) == 1, process.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_plain_sqlite_url_is_served(run_server, plugin_env, tmp_path):
    server = run_server("predict_only", env=plugin_env, database_url=f"sqlite:///{tmp_path / 'plain.sqlite'}")
    assert requests.post(server + "/v2/models/predict_only/predict/").json()["predictions"] == [1, 2, 3]
    assert (tmp_path / "plain.sqlite").exists()


def test_a_file_that_is_not_a_database(tmp_path):
    corrupt = tmp_path / "jobs.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    assert_one_line_failure(start(tmp_path, "--database-url", f"sqlite:///{corrupt}"), "job database", str(corrupt))


def test_a_read_only_database(tmp_path):
    path = tmp_path / "ro.sqlite"
    import sqlite3

    sqlite3.connect(path).close()
    process = start(tmp_path, "--database-url", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert_one_line_failure(process, "job database", "readonly")


def test_an_unreachable_database_server(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://deepaas:secret@127.0.0.1:{port}/jobs"
    process = start(tmp_path, "--database-url", url)
    assert_one_line_failure(process, "job database", f"127.0.0.1:{port}")
    assert "secret" not in process.stderr, "the password is never printed"


@pytest.mark.parametrize(("directory", "words"), [("missing", ("does not exist",)), ("/proc", ("cannot write",))])
def test_an_unusable_upload_directory(tmp_path, directory, words):
    path = str(tmp_path / directory) if directory == "missing" else directory
    process = start(tmp_path, "--upload-dir", path, "--database-url", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    assert_one_line_failure(process, "upload directory", *words)


@pytest.mark.parametrize("port_option", ["--listen-port", "--grpc-port"])
def test_a_port_in_use_is_reported_before_any_model_starts(tmp_path, port_option):
    warmed = tmp_path / "warmed"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc = ["--grpc-port", str(port)] if port_option == "--grpc-port" else []
        process = start(
            tmp_path,
            "--database-url",
            f"sqlite:///{tmp_path / 'jobs.sqlite'}",
            *grpc,
            model="lingering",
            plugins={"lingering": "lingering"},
            env={"LINGERING_WARMED": str(warmed)},
            port=None if grpc else port,
        )
    assert_one_line_failure(process, f"127.0.0.1:{port}", *(["--grpc-port"] if grpc else []))
    assert not warmed.exists(), "the model was loaded and warmed before the port was tried"


def test_help_shows_defaults_and_where_jobs_are_kept():
    text = subprocess.run(["deepaas-like-run", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "Default: 5000." in text and "Default: 127.0.0.1." in text
    assert "job database" in text and "jobs.sqlite" in text


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_event_loop_chosen_serves(run_server, plugin_env, loop):
    server = run_server("predict_only", env=plugin_env, args=["--event-loop", loop])
    assert requests.post(server + "/v2/models/predict_only/predict/").json()["predictions"] == [1, 2, 3]
    assert f"connections, {loop} event loop)" in server.log.read_text()


def test_auto_is_uvloop_where_it_is_installed(monkeypatch):
    import uvloop

    from deepaas_like.cmd.run import loop_factory
    from deepaas_like.exceptions import StartupError

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("auto", processes=2) is None, "several server processes: asyncio's loop"
    assert loop_factory("uvloop", processes=2) is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: importing it fails
    assert loop_factory("auto") is None
    with pytest.raises(StartupError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_help_shows_the_options_under_their_section_titles_and_no_longer_than_before():
    text = subprocess.run(["deepaas-like-run", "--help"], capture_output=True, text=True, timeout=60).stdout
    for section in SECTIONS:
        assert f"\n{section.name}:\n  {' '.join(section.help.split()[:4])}" in text
    assert "\n  --listen-port LISTEN_PORT" in text[text.index("\nhttp:") : text.index("\nsecurity:")]
    assert "--warm, --nowarm" in text and "--no-warm" not in text, "one negative spelling documented"
    assert len(text.splitlines()) <= 361, "the flat list the sections replaced had 361 lines"


@pytest.mark.parametrize("flag", ["--nowarm", "--no-warm"])
def test_the_server_takes_either_negative_spelling(flag):
    """A bad value after the flag is reported (exit 1), not the flag (exit 2: unrecognized)."""
    process = subprocess.run(
        ["deepaas-like-run", flag, "--nodoc-endpoint", "--no-access-log", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1 and process.stderr.startswith("deepaas-like-run: --workers: "), process.stderr


def test_the_deprecated_per_model_options_say_what_replaces_them(tmp_path):
    """Said before the server starts (here: refused for a later reason)."""
    args = ["--model-workers", "predict_only:2", "--heartbeat-interval", "1", "--heartbeat-expiry", "1"]
    process = start(tmp_path, *args)
    assert_one_line_failure(process, "heartbeat-expiry")
    assert "model-workers is deprecated: set workers in a [model:NAME] section" in process.stderr
    assert "[model:predict_only] workers = 2" in process.stderr
