"""Progress from the first second (issue 28, item 4): the events of a training say what the
server does before the plugin reports anything (a worker starting, the model loading, the
call running), and a burst of reports keeps one event per report of metrics.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import requests

from deepaas_like.jobs.recording import ProgressBuffer, event
from deepaas_like.jobs.store import MAX_EVENTS
from deepaas_like.workers.base import ServerNote
from tests.conftest import make_plugin_site

BURSTY = "/v2/models/bursty"
# A plugin whose model takes a second to load, then reports a burst of metrics (ten epochs
# in well under the 0.2 s between two writes of the job).
PLUGIN = """
import time
from marshmallow import fields
from deepaas_like.progress import report

def warm():
    time.sleep(1.0)

def get_metadata():
    return {"name": "bursty"}

def get_train_args():
    return {"epochs": fields.Int(load_default=10)}

def train(epochs):
    for epoch in range(epochs):
        metrics = {"loss": 1.0 / (epoch + 1), "accuracy": epoch / epochs}
        report(progress=(epoch + 1) / epochs, metrics=metrics, step=epoch)
    report(message="trained")
    return {"epochs": epochs}
"""


def bursty_env(site: Path) -> dict[str, str]:
    site.mkdir(parents=True, exist_ok=True)
    (site / "bursty_plugin.py").write_text(PLUGIN)
    return make_plugin_site(site, {"bursty": "bursty_plugin"})


def _stream(url: str) -> list[dict[str, Any]]:
    """The job documents of an event stream, to its end."""
    documents, name = [], None
    with requests.get(url, stream=True, timeout=60) as stream:
        assert stream.status_code == 200
        for raw in stream.iter_lines():
            line = raw.decode()
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name == "job":
                documents.append(json.loads(line.split(":", 1)[1]))
    return documents


def test_a_training_says_what_the_server_does_before_the_plugin_reports(run_server, tmp_path):
    server = run_server("bursty", env=bursty_env(tmp_path / "site"), args=["--job-poll-interval", "0.1"])
    training = requests.post(server + BURSTY + "/train/", data={"epochs": "10"}, timeout=30).json()
    documents = _stream(server + BURSTY + f"/train/{training['uuid']}/events")
    # The stream showed the server's messages while the model loaded, before any report.
    first = next(document for document in documents if document.get("events"))
    assert first["events"] and all(e.get("source") == "server" for e in first["events"]), first
    messages = [e["message"] for e in first["events"]]
    assert "starting the training worker: loading the model" in messages
    done = documents[-1]
    assert done["status"] == "done"
    server_side = [e["message"] for e in done["events"] if e.get("source") == "server"]
    assert server_side[-3:] == [
        "starting the training worker: loading the model",
        "training worker ready",
        "running train",
    ]
    plugin = [e for e in done["events"] if e.get("source") != "server"]
    first_report = done["events"].index(plugin[0])
    assert all(e.get("source") == "server" for e in done["events"][:first_report])
    # Ten reports within one write: ten events, each with its step's metrics.
    assert [(e["step"], e["metrics"]) for e in plugin[:-1]] == [
        (epoch, {"loss": 1.0 / (epoch + 1), "accuracy": epoch / 10}) for epoch in range(10)
    ]
    assert [e["progress"] for e in plugin[:-1]] == [(epoch + 1) / 10 for epoch in range(10)], "each its own"
    assert plugin[0]["message"] == "step 0: loss=1 accuracy=0"
    assert plugin[-1]["message"] == "trained" and "metrics" not in plugin[-1]
    assert done["metrics"] == {"loss": 0.1, "accuracy": 0.9}
    for one in done["events"]:
        assert set(one) <= {"time", "message", "metrics", "step", "source", "progress"}


def test_a_queued_job_says_it_waits_for_a_worker(run_server, tmp_path):
    server = run_server("bursty", env=bursty_env(tmp_path / "site"), args=["--job-poll-interval", "0.1"])
    first = requests.post(server + BURSTY + "/train/", data={"epochs": "3"}, timeout=30).json()
    second = requests.post(server + BURSTY + "/train/", data={"epochs": "3"}, timeout=30).json()
    assert first["status"] == "running"
    assert second["status"] == "pending"
    assert [(e["message"], e["source"]) for e in second["events"]] == [
        ("queued: waiting for a free worker (1 of 1 train workers busy here)", "server")
    ]
    done = _stream(server + BURSTY + f"/train/{second['uuid']}/events")[-1]
    assert done["status"] == "done" and done["events"][0]["message"].startswith("queued: ")


class _Store:
    """What ProgressBuffer needs of a JobStore: ``report``, recorded."""

    def __init__(self) -> None:
        self.reports: list[tuple[Any, ...]] = []

    async def report(self, *args: Any) -> None:
        self.reports.append(args)


def test_events_of_reports():
    assert event(None) is None
    assert event("epoch 1")["message"] == "epoch 1"
    made = event(None, {"loss": 0.3125}, 4)
    assert (made["message"], made["metrics"], made["step"]) == ("step 4: loss=0.3125", {"loss": 0.3125}, 4)
    assert event(ServerNote("running train"))["source"] == "server"


def test_a_burst_keeps_every_different_report_and_at_most_the_latest_events():
    async def burst() -> list[dict[str, Any]]:
        store = _Store()
        buffer = ProgressBuffer(store, "0" * 32, lambda uuid: None)  # type: ignore[arg-type]
        for step in range(MAX_EVENTS + 20):
            buffer.add(None, None, {"loss": float(step)})
        buffer.add(None, "same")
        buffer.add(None, "same")  # a repeat of the previous report: no new event
        assert len(buffer._messages) == MAX_EVENTS  # bounded between two writes
        await buffer.flush()
        buffer.close()
        return store.reports[0][2]

    events = asyncio.run(burst())
    assert len(events) == MAX_EVENTS and events[-1]["message"] == "same"
    assert [e["step"] for e in events[:-1]] == list(range(21, MAX_EVENTS + 20))
