"""Malformed bodies, slow clients, forged Host headers and unkeyed debug access against a
real server on 127.0.0.1: each gets a clear 4xx JSON answer or a closed connection, never a
500, a traceback in the log or a link to a host of the client's choosing.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_PLUGINS, make_plugin_site

TRAIN = b"/v2/models/deepaas_style/train/"


@pytest.fixture(scope="module")
def server(module_server, tmp_path_factory):
    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)
    args = [
        "--keepalive-timeout",
        "2",
        "--body-timeout",
        "2",
        "--trusted-proxies",
        "10.9.8.7",
        "--auth-token",
        "k3y",
        "--debug-endpoint",
    ]
    return module_server("deepaas_style", env=env, args=args)


def exchange(server: str, request: bytes, timeout: float = 20.0) -> tuple[int, bytes]:
    """Send raw bytes, read the answer until the server closes; its status and body."""
    status, _, body = exchange_with_head(server, request, timeout)
    return status, body


def exchange_with_head(server: str, request: bytes, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    """Send raw bytes, read the answer until the server closes; its status, head (ending
    with a line break) and body."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head + b"\r\n", body


def post(server: str, content_type: bytes, body: bytes, extra: bytes = b"") -> tuple[int, dict]:
    request = (
        b"POST " + TRAIN + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: k3y\r\n"
        b"Content-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )
    status, answer = exchange(server, request)
    return status, json.loads(answer)


def part(headers: bytes, value: bytes) -> bytes:
    return b'--XX\r\nContent-Disposition: form-data; name="sleep"\r\n' + headers + b"\r\n" + value + b"\r\n--XX--\r\n"


MULTIPART = b"multipart/form-data; boundary=XX"


@pytest.mark.parametrize(
    ("content_type", "body", "extra", "field", "words"),
    [
        (b"application/json", b'{"sleep": ' + b"[" * 1000 + b"]" * 1000 + b"}", b"", "_body", "nested deeper"),
        (b"application/json", b'{"sleep": ' + b"[" * 150 + b"]" * 150 + b"}", b"", "_body", "nested deeper"),
        (b"application/x-www-form-urlencoded", b"sleep=\xff", b"", "_body", "not valid UTF-8"),
        (MULTIPART, part(b"Content-Type: text/plain; charset=nope\r\n", b"1"), b"", "sleep", "nope"),
        (MULTIPART, part(b"Content-Transfer-Encoding: base64\r\n", b"!!!not base64"), b"", "sleep", "cannot decode"),
        (MULTIPART, part(b"Content-Transfer-Encoding: base64\r\n", b"!!!"), b"", "sleep", "not valid base64"),
        (MULTIPART, part(b"Content-Transfer-Encoding: x-weird\r\n", b"1"), b"", "sleep", "x-weird"),
        (b"application/json", b'{"sleep": 1}', b"Content-Encoding: gzip\r\n", "_body", "cannot be read"),
        (MULTIPART, part(b"", b"1"), b"Content-Encoding: gzip\r\n", "_body", "cannot be read"),
        (b"application/json", b'{"sleep": 1}', b"Content-Encoding: br\r\n", "_body", "cannot be read"),
        (b"application/json", b'{"sleep": 1}', b"Content-Encoding: zstd\r\n", "_body", "cannot be read"),
    ],
    ids=[
        "json-1000-deep",
        "json-150-deep",
        "urlencoded-not-utf8",
        "unknown-charset",
        "bad-base64",
        "no-base64-at-all",
        "unknown-transfer-encoding",
        "fake-gzip-json",
        "fake-gzip-multipart",
        "fake-br-json",
        "fake-zstd-json",
    ],
)
def test_a_malformed_body_is_422_naming_the_problem(server, content_type, body, extra, field, words):
    status, answer = post(server, content_type, body, extra)
    assert status == 422, answer
    assert words in " ".join(answer[field])
    assert "Traceback" not in Path(server.log).read_text()


def test_a_base64_part_across_lines_is_decoded(server):
    """MIME writes base64 in lines (RFC 2045): the strict check allows line breaks."""
    status, answer = post(server, MULTIPART, part(b"Content-Transfer-Encoding: base64\r\n", b"M\r\nA==\r\n"))
    assert status == 200 and answer["args"]["sleep"] == 0, answer


@pytest.mark.parametrize("coding", [b"x-unknown", b"compress", b"gzip, deflate"])
def test_a_body_in_a_content_encoding_the_server_does_not_decode_is_415(server, coding):
    """aiohttp passes such a body on undecoded (it decodes one coding of those it knows)."""
    status, head, answer = exchange_with_head(
        server,
        b"POST " + TRAIN + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: k3y\r\n"
        b"Content-Type: application/json\r\nContent-Length: 12\r\nContent-Encoding: " + coding + b"\r\n\r\n"
        b'{"sleep": 0}',
    )
    assert status == 415
    assert b"\r\naccept-encoding: gzip, deflate, br, zstd\r\n" in head.lower()
    message = json.loads(answer)["message"]
    assert coding.decode() in message and "Content-Encoding" in message


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_a_body_in_br_or_zstd_is_decoded(server, coding):
    """aiohttp decodes them with Brotli and backports.zstd (without: a plain-text 400)."""
    if coding == "br":
        import brotli

        body = brotli.compress(b'{"sleep": 0, "tag": "packed"}')
    else:
        from backports import zstd

        body = zstd.compress(b'{"sleep": 0, "tag": "packed"}')
    status, answer = post(server, b"application/json", body, b"Content-Encoding: " + coding.encode() + b"\r\n")
    assert status == 200 and answer["args"]["sleep"] == 0, answer


def many_parts(count: int, boundary: bytes = b"XX") -> bytes:
    one = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'
    return one * count + b"--" + boundary + b"--\r\n"


def test_a_form_of_more_parts_than_max_form_parts_is_413_naming_the_option(server):
    """The default, 1000, as Werkzeug's max_form_parts and Starlette's max_fields."""
    for content_type, body in [
        (MULTIPART, many_parts(1001)),
        (b"application/x-www-form-urlencoded", b"&".join([b"x=1"] * 1001)),
        # A nested multipart's parts count too (they are read to be dropped).
        (
            MULTIPART,
            b'--XX\r\nContent-Disposition: form-data; name="files"\r\n'
            b"Content-Type: multipart/mixed; boundary=YY\r\n\r\n" + many_parts(1000, b"YY") + b"\r\n--XX--\r\n",
        ),
    ]:
        status, answer = post(server, content_type, body)
        assert status == 413, answer
        assert "1000" in answer["message"] and "max-form-parts" in answer["message"]
    sleep = b'--XX\r\nContent-Disposition: form-data; name="sleep"\r\n\r\n0\r\n'
    status, answer = post(server, MULTIPART, sleep + many_parts(999))
    assert status == 200, "1000 parts are accepted"


def test_a_client_that_never_finishes_its_headers_is_disconnected(server):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # recv raises past 30 s
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert sock.recv(100) == b"", "the server closes the connection (keep-alive timeout: 2 s)"


def test_a_client_that_stops_sending_its_body_gets_408(server):
    port = int(server.rsplit(":", 1)[1])
    body = part(b"", b"1")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST "
            + TRAIN
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: k3y\r\nContent-Type: "
            + MULTIPART
            + b"\r\nContent-Length: "
            + str(len(body) + 100).encode()
            + b"\r\n\r\n"
            + body[:20]
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body-timeout" in answer
    assert list(server.upload_dir.iterdir()) == []


def test_links_are_never_built_from_the_host_header(server):
    forged = requests.get(server + "/v2/", headers={"Host": "evil.example"}).json()
    assert forged["links"][0]["href"] == "/v2/", "relative, whatever the client claims"
    queued = requests.post(
        server + "/v2/models/deepaas_style/predict/",
        headers={"Host": "evil.example", "X-API-Key": "k3y", "Prefer": "respond-async"},
        files={"data": b"x"},
    )
    assert queued.status_code == 202 and queued.headers["Location"].startswith("/v2/models/deepaas_style/predict/")
    untrusted = requests.get(
        server + "/v2/", headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    )
    assert untrusted.json()["links"][0]["href"] == "/v2/", "forwarding headers from an untrusted peer are ignored"


def test_public_url_and_trusted_proxies_build_absolute_links(run_server, plugin_env):
    public = run_server("predict_only", env=plugin_env, args=["--public-url", "https://models.example.org/api/"])
    document = requests.get(public + "/v2/models/", headers={"Host": "evil.example"}).json()
    assert document["models"][0]["links"][0]["href"] == "https://models.example.org/api/v2/models/predict_only/"
    proxied = run_server("predict_only", env=plugin_env, args=["--trusted-proxies", "127.0.0.0/8"])
    headers = {"X-Forwarded-Host": "models.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/ml"}
    assert (
        requests.get(proxied + "/v2/", headers=headers).json()["links"][0]["href"]
        == "https://models.example.org/ml/v2/"
    )


def test_debug_needs_the_api_key(server):
    assert requests.get(server + "/debug").status_code == 401
    logs = requests.get(server + "/debug", headers={"Authorization": "Bearer k3y"})
    assert logs.status_code == 200 and "serving deepaas_style" in logs.text


def test_repeated_errors_are_logged_a_few_times_then_counted(tmp_path):
    import logging

    from deepaas_like.logs import RepeatFilter

    repeat = RepeatFilter(burst=3, window=60)
    record = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource", (), None
    )
    passed = sum(repeat.filter(logging.makeLogRecord(record.__dict__)) for _ in range(1000))
    assert passed == 3
    info = logging.LogRecord("deepaas_like.access", logging.INFO, __file__, 1, "%s", ("GET /",), None)
    assert all(repeat.filter(info) for _ in range(1000)), "access lines are never dropped"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_clients_holding_sockets_cannot_starve_the_server_of_file_descriptors(tmp_path, plugin_env, loop):
    """With 400 file descriptors, 300 slow-header clients: past the connection limit (400 less
    256 kept for files) new connections get a quick 503, the log stays short, and once the
    keep-alive timeout has cut the slow clients the server answers again, database included.
    """
    from tests.conftest import start_server

    wrapper = tmp_path / "limited-run"
    wrapper.write_text('#!/bin/sh\nexec prlimit --nofile=400:400 deepaas-like-run "$@"\n')
    wrapper.chmod(0o755)
    server = start_server(
        ["slow"],
        tmp_path,
        env=plugin_env,
        program=str(wrapper),
        args=["--keepalive-timeout", "3", "--event-loop", loop],
    )
    port = int(server.rsplit(":", 1)[1])
    try:
        slow = []
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        refused = requests.get(server + "/healthz", timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "too many open connections" in refused.json()["message"]
        for sock in slow:
            sock.settimeout(30)
            answer = sock.recv(100)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), "cut by the keep-alive timeout, or refused"
            sock.close()
        assert requests.get(server + "/healthz", timeout=10).status_code == 200
        training = requests.post(server + "/v2/models/slow/train/", data={"seconds": "0"}, timeout=10)
        assert training.status_code == 200, "the job database still opens"
    finally:
        server.stop()
    refusals = Path(server.log).read_text().count("refused a connection")
    assert 1 <= refusals <= 11, f"{refusals} refusal lines: repeated warnings are rate-limited"
