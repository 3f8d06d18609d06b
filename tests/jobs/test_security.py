"""Who may do what with jobs, through real servers: client values never become server
files (issue 10, item 1), jobs belong to the API key that created them (item 15), and a
retried POST with the same ``Idempotency-Key`` returns the first job (item 21).
"""

from __future__ import annotations

import concurrent.futures
import json
import socket

import pytest
import requests

from deepaas_like.jobs.store import JobStore
from tests.jobs.helpers import PROBE, kill_9, plugin_env


@pytest.fixture
def probe_env(tmp_path):
    return plugin_env(tmp_path / "site")


async def test_old_rows_keep_uploads_and_drop_forged_ones(database_url, tmp_path):
    """Rows written before uploads were stored apart: the server's own markers (a path in
    the row's own upload folder) become uploads, a client's forged marker stays a value.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from deepaas_like.database import Database, async_url

    # Rewritten for issue 27: the engine, async_url and migrate are the database room's.
    engine = create_async_engine(async_url(database_url))
    store = JobStore(Database(engine))
    await store.database.migrate("0002")
    folder = tmp_path / "deepaas-like-upload-old"
    genuine = {"__uploaded_file__": ["data", str(folder / "tmpab12.csv"), "text/csv", "in.csv"]}
    forged = {"__uploaded_file__": ["options", "/etc/shadow", "text/plain", "x"]}
    sneaky = {"__uploaded_file__": ["options", str(folder / ".." / "secret"), "text/plain", "x"]}
    rows = {
        "a" * 32: ({"data": genuine, "n": 1}, str(folder)),
        "b" * 32: ({"options": forged}, str(folder)),
        "c" * 32: ({"options": sneaky, "data": genuine}, str(folder)),
        "d" * 32: ({"data": genuine}, None),
    }
    async with engine.begin() as connection:
        for uuid, (kwargs, upload_dir) in rows.items():
            await connection.execute(
                text(
                    "INSERT INTO jobs (uuid, model, kind, status, args, kwargs, upload_dir, created, events) "
                    "VALUES (:uuid, 'm', 'train', 'pending', '{}', :kwargs, :upload_dir, :created, '[]')"
                ),
                {
                    "uuid": uuid,
                    "kwargs": json.dumps(kwargs),
                    "upload_dir": upload_dir,
                    "created": "2026-01-01 00:00:00",
                },
            )
    await store.database.migrate()
    from deepaas_like.jobs.store import decode_kwargs

    decoded = {}
    for uuid in rows:
        job = await store.get("m", uuid)
        decoded[uuid] = decode_kwargs(job.kwargs, job.files)
    await store.close()
    assert decoded["a" * 32]["data"].filename == str(folder / "tmpab12.csv") and decoded["a" * 32]["n"] == 1
    assert decoded["b" * 32]["options"] == forged
    assert decoded["c" * 32]["options"] == sneaky and decoded["c" * 32]["data"].original_filename == "in.csv"
    assert decoded["d" * 32]["data"] == genuine, "no upload folder: nothing is trusted"


def test_a_post_retried_with_its_idempotency_key_returns_the_first_job(run_server, probe_env, tmp_path):
    """The kill -9 drill: a client posts a training, the server dies before the client reads
    the answer, the client posts again with the same Idempotency-Key to the restarted
    server, and gets the first job, not a second one.
    """
    keys = ["--auth-token", "alice-key-1", "--auth-token", "bob-key-2"]
    alice, bob = ({"Authorization": f"Bearer {key}"} for key in ("alice-key-1", "bob-key-2"))
    first_server = run_server("jobs_probe", env=probe_env, args=[*keys, "--job-poll-interval", "0.1"])
    once = {**alice, "Idempotency-Key": '"8e03978e-40d5-43e8-bc93-6894a57f9324"'}
    posted = requests.post(first_server + PROBE + "/train/", data={"seconds": "3", "note": "once"}, headers=once)
    assert posted.status_code == 200
    kill_9(first_server)

    server = run_server(
        "jobs_probe", env=probe_env, args=[*keys, "--job-poll-interval", "0.1", "--instance-name", "again"]
    )
    train = server + PROBE + "/train/"
    retried = requests.post(train, data={"seconds": "3", "note": "once"}, files={"data": ("x.txt", b"x")}, headers=once)
    assert retried.status_code == 422, "the retry has an upload the first had not"
    assert "Idempotency-Key" in retried.json()
    retried = requests.post(train, data={"seconds": "3", "note": "once"}, headers=once)
    assert retried.status_code == 200 and retried.json()["uuid"] == posted.json()["uuid"]
    assert [job["uuid"] for job in requests.get(train, headers=alice).json()] == [posted.json()["uuid"]]
    other = requests.post(train, data={"seconds": "0", "note": "twin"}, headers={**once, **alice})
    assert other.status_code == 422 and "other arguments" in other.json()["Idempotency-Key"][0]
    bobs = requests.post(train, data={"seconds": "3", "note": "once"}, headers={**once, **bob})
    assert bobs.status_code == 200 and bobs.json()["uuid"] != posted.json()["uuid"], "keys are per API key"

    # Retries racing each other, on asynchronous predictions: one job.
    racing = {**alice, "Idempotency-Key": "race-1", "Prefer": "respond-async"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(server + PROBE + "/predict/", data={"seconds": "0"}, headers=racing), range(6)
            )
        )
    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["uuid"] for answer in answers}) == 1
    assert len({answer.headers["Location"] for answer in answers}) == 1
    assert len(requests.get(server + PROBE + "/predict/", headers=alice).json()) == 1

    bad = requests.post(train, data={"seconds": "0"}, headers={**alice, "Idempotency-Key": '""'})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["message"]
    for job in requests.get(train, headers=alice).json() + requests.get(train, headers=bob).json():
        requests.delete(train + job["uuid"], headers=alice if job["uuid"] == posted.json()["uuid"] else bob)


@pytest.mark.parametrize(
    "key",
    [b"", "clé".encode(), b"k" * 256, b"a\tb"],
    ids=["empty", "not-ascii", "256-characters", "control-character"],
)
def test_a_malformed_idempotency_key_is_400_and_leaves_no_upload(run_server, probe_env, key):
    """The header is checked before the body is read (issue 26, item 4): before, the
    uploads were handed to no one, and stayed until the next start.
    """
    server = run_server("jobs_probe", env=probe_env)
    port = int(server.rsplit(":", 1)[1])
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="data"; filename="x.csv"\r\n\r\n'
        + b"x" * 1000
        + b"\r\n--XX--\r\n"
    )
    for path, extra in [(PROBE + "/train/", b""), (PROBE + "/predict/", b"Prefer: respond-async\r\n")]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + b"Idempotency-Key: "
            + key
            + b"\r\n"
            + extra
            + b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, document = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert "Idempotency-Key" in json.loads(document)["message"]
        assert list(server.upload_dir.iterdir()) == [], f"{path}: the upload is gone once answered"
