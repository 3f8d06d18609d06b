"""NaN and Infinity never enter or leave the server as JSON (issue 26, item 2): a request
body holding one is refused with 422 naming the argument, and an answer never holds one
(strict parsers, browsers' ``JSON.parse``, refuse the whole document): a stored job row
that has one is written with ``null`` there, in listings and in event streams alike.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

PROBE = "/v2/models/jobs_probe"


def strict_json(text: str) -> object:
    """``text`` parsed as JSON.parse would: a bare NaN or Infinity fails the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in an answer: not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ('{"options": {"a": NaN}}', "options", '["a"] is NaN'),
        ('{"options": [1, {"b": -Infinity}]}', "options", '[1]["b"] is -Infinity'),
        ('{"seconds": Infinity}', "seconds", "is Infinity"),
        ('{"note": "x", "seconds": 1e999}', "seconds", "is Infinity"),
    ],
    ids=["nan-in-a-dict", "minus-infinity-in-a-list", "infinity", "past-a-float"],
)
async def test_a_json_body_with_a_number_that_is_not_finite_is_422_naming_it(serve_in_process, body, field, words):
    client = await serve_in_process("jobs_probe")
    answer = await client.post(PROBE + "/train/", data=body, headers={"Content-Type": "application/json"})
    assert answer.status == 422
    messages = strict_json(await answer.text())
    assert list(messages) == [field] and words in messages[field][0] and "finite" in messages[field][0]
    assert strict_json(await (await client.get(PROBE + "/train/")).text()) == [], "nothing was stored"


async def test_a_stored_nan_is_written_as_null_in_listings_and_event_streams(serve_in_process, tmp_path):
    client = await serve_in_process("jobs_probe")
    posted = await (await client.post(PROBE + "/train/", json={"options": {"a": 1}})).json()
    url = PROBE + f"/train/{posted['uuid']}"
    for _ in range(600):
        if (await (await client.get(url)).json())["status"] == "done":
            break
        await asyncio.sleep(0.05)
    # A row written before requests were checked, or a plugin's metric that is NaN.
    with sqlite3.connect(tmp_path / "jobs.sqlite") as database:
        database.execute(
            "UPDATE jobs SET args = ?, output = ?, metrics = ? WHERE uuid = ?",
            (
                '{"options": {"a": NaN}}',
                '{"loss": NaN, "best": [Infinity, 1.5]}',
                '{"loss": -Infinity}',
                posted["uuid"],
            ),
        )

    listing = strict_json(await (await client.get(PROBE + "/train/")).text())
    job = strict_json(await (await client.get(url)).text())
    assert listing == [job]
    assert job["args"] == {"options": {"a": None}}
    assert job["result"]["output"] == {"loss": None, "best": [None, 1.5]}
    assert job["metrics"] == {"loss": None}
    stream = await (await client.get(url + "/events")).text()
    events = [line[len("data: ") :] for line in stream.splitlines() if line.startswith("data: ")]
    assert strict_json(events[0]) == job and strict_json(events[-1]) == {"status": "done"}
