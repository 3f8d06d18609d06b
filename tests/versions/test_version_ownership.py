"""Model versions under API keys, and promotions that must serve: a version's training (its
uuid, arguments, MLflow run) is shown only to the key that owned the training and to admin
keys; promoting, rolling back and deleting take an admin key; a version that cannot load is
never promoted, and a model name whose promoted version cannot serve here makes /readyz 503.
"""

from __future__ import annotations

import json

import requests

from deepaas_like.database import Database, async_url
from deepaas_like.jobs.store import JobStore
from deepaas_like.registry.records import VersionRecords
from tests.versions.helpers import FAST, MODEL, auth, predict, train, until, versions

ALICE, BOB, ROOT = "alice-key", "bob-key", "root-key"
KEYS = ["--auth-token", ALICE, "--auth-token", BOB, "--admin-token", ROOT]


def get(base: str, path: str, key: str | None = None) -> requests.Response:
    answer = requests.get(f"{base}{path}", headers=auth(key), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def post(base: str, path: str, key: str | None = None) -> requests.Response:
    return requests.post(f"{base}{path}", headers=auth(key), timeout=150)


def test_only_the_training_key_and_admins_see_a_versions_training(run_server, versioned_env):
    server = run_server(MODEL, env=versioned_env, args=[*FAST, *KEYS])
    training = train(server, key=ALICE, value=7)
    assert training["result"]["version"] == f"{MODEL}@1", training
    secret = training["uuid"]
    # A version that fails to load names its directory to no one: the path holds the uuid.
    failing = train(server, key=ALICE, value=8, failure="load")
    assert failing["result"]["version"] == f"{MODEL}@2"
    broken = predict(server, f"{MODEL}@2", key=BOB)
    assert broken.status_code == 503 and "the saved state is corrupt" in broken.json()["message"]
    assert failing["uuid"] not in broken.text, broken.text
    unavailable = get(server, f"/v2/models/{MODEL}/versions/2", BOB).json()
    assert unavailable["state"] == "unavailable" and "the saved state is corrupt" in unavailable["message"]
    assert failing["uuid"] not in json.dumps(unavailable)

    paths = [
        f"/v2/models/{MODEL}/versions/1",
        f"/v2/models/{MODEL}/versions/",
        f"/v2/models/{MODEL}@1/",
        "/v2/models/",
    ]
    for key in (None, BOB, "not-a-key"):
        for path in paths:
            answer = get(server, path, key)
            assert secret not in answer.text and '"arguments"' not in answer.text, (key, path, answer.text)
        version = get(server, f"/v2/models/{MODEL}@1/", key).json()["model_version"]
        assert (version["id"], version["version"], version["metrics"]["value"]) == (f"{MODEL}@1", 1, 7.0)
        assert {"created", "state", "promoted"} <= set(version) and "training" not in version
    for key in (ALICE, ROOT):
        version = get(server, f"/v2/models/{MODEL}/versions/1", key).json()
        assert version["training"] == secret and version["arguments"] == {"value": 7, "steps": 3, "failure": ""}
        listed = {m["id"]: m for m in get(server, "/v2/models/", key).json()["models"]}
        assert listed[f"{MODEL}@1"]["model_version"]["training"] == secret
        assert versions(server, key)["versions"][-1]["training"] == secret

    # Changing what everyone gets takes an admin key, whoever owns the version.
    for key in (ALICE, BOB):
        for path in (f"/v2/models/{MODEL}/versions/1/promote", f"/v2/models/{MODEL}/rollback"):
            refused = post(server, path, key)
            assert refused.status_code == 403, refused.text
            assert "admin key (--admin-token)" in refused.json()["message"]
        refused = requests.delete(f"{server}/v2/models/{MODEL}/versions/1", headers=auth(key), timeout=30)
        assert refused.status_code == 403 and "admin key" in refused.json()["message"]
    assert post(server, f"/v2/models/{MODEL}/versions/1/promote").status_code == 401
    assert versions(server)["promoted_version"] is None
    promoted = post(server, f"/v2/models/{MODEL}/versions/1/promote", ROOT)
    assert promoted.status_code == 200, promoted.text
    assert predict(server, MODEL, key=BOB).json()["predictions"]["value"] == 7
    assert post(server, f"/v2/models/{MODEL}/rollback", ROOT).json()["promoted_version"] is None
    deleted = requests.delete(f"{server}/v2/models/{MODEL}/versions/1", headers=auth(ROOT), timeout=30)
    assert deleted.status_code == 200 and deleted.json()["training"] == secret


def test_a_version_that_cannot_load_is_not_promoted(run_server, versioned_env, tmp_path):
    server = run_server(MODEL, env=versioned_env, args=[*FAST, "--max-loaded-versions", "1"])
    assert train(server, value=7)["result"]["version"] == f"{MODEL}@1"
    assert train(server, value=8, failure="load")["result"]["version"] == f"{MODEL}@2"
    assert post(server, f"/v2/models/{MODEL}/versions/1/promote").status_code == 200

    refused = post(server, f"/v2/models/{MODEL}/versions/2/promote")
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    assert f"{MODEL}@2 cannot be promoted" in message and "the saved state is corrupt" in message
    assert f"still serves {MODEL}@1" in message
    assert versions(server)["promoted_version"] == f"{MODEL}@1"
    assert predict(server, MODEL).json()["predictions"]["value"] == 7
    assert requests.get(f"{server}/readyz", timeout=30).status_code == 200

    # What a name serves stays loaded while other versions come and go (max-loaded-versions 1).
    assert train(server, value=9)["result"]["version"] == f"{MODEL}@3"
    assert predict(server, f"{MODEL}@3").json()["predictions"]["value"] == 9
    states = {v["id"]: v["state"] for v in versions(server)["versions"]}
    assert states[f"{MODEL}@1"] == "loaded", states


def test_readyz_says_so_while_a_promoted_version_cannot_serve(run_server, versioned_env, tmp_path):
    server = run_server(MODEL, env=versioned_env, args=FAST)
    training = train(server, value=7)
    assert post(server, f"/v2/models/{MODEL}/versions/1/promote").status_code == 200
    assert requests.get(f"{server}/readyz", timeout=30).status_code == 200
    # The promoted version breaks under the server (its state corrupted on disk): restarted,
    # the server loads what the name serves at once, and is not ready while it cannot.
    server.stop()
    state = tmp_path / "model-store" / MODEL / training["uuid"] / "state.json"
    state.write_text(json.dumps({"value": 7, "broken": True}))
    server = run_server(MODEL, env=versioned_env, args=FAST, database_url=server.database_url)
    # A liveness bound: the load starts at start-up and fails within seconds.
    ready = until(lambda: (r := requests.get(f"{server}/readyz", timeout=30)).status_code == 503 and r.json(), 120)
    assert "the saved state is corrupt" in ready["models"][MODEL], ready
    assert predict(server, MODEL).status_code == 503
    # Rolled back, the name serves the plugin: ready again.
    assert post(server, f"/v2/models/{MODEL}/rollback").json()["promoted_version"] is None
    assert requests.get(f"{server}/readyz", timeout=30).status_code == 200
    assert predict(server, MODEL).json()["predictions"]["value"] == 0


async def test_versions_made_before_owners_were_recorded_take_their_trainings_key(database_url):
    """A database of versions made before version rows named their key (migration 0009):
    each takes its training's key while that job is kept; one whose job is gone has none
    (only admin keys see its training, once API keys are configured).
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    # Rewritten for issue 27: the engine, async_url and migrate are the database room's.
    engine = create_async_engine(async_url(database_url))
    store = JobStore(Database(engine))
    await store.database.migrate("0008")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (uuid, model, kind, status, args, kwargs, created, events, api_key_hash) "
                "VALUES (:uuid, 'm', 'train', 'done', '{}', '{}', '2026-01-01 00:00:00', '[]', :key)"
            ),
            {"uuid": "a" * 32, "key": "f" * 64},
        )
        for number, job in ((1, "a" * 32), (2, "b" * 32)):
            await connection.execute(
                text(
                    "INSERT INTO model_versions (model, number, job, location, parent, arguments, metrics, created) "
                    "VALUES ('m', :number, :job, :location, 'm', '{}', '{}', '2026-01-01 00:00:00')"
                ),
                {"number": number, "job": job, "location": f"m/{job}"},
            )
    await store.database.migrate()
    owners = {record.number: record.api_key_hash for record in await VersionRecords(store.database).versions_of(["m"])}
    await store.close()
    assert owners == {1: "f" * 64, 2: None}
