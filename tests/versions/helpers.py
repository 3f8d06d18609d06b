"""What the version tests share: the ``versioned`` test plugin's name, and calls that train
it and wait, predict and list its versions on a real server (with an API key: ``key``).
"""

from __future__ import annotations

import time

import requests

MODEL = "versioned"
FAST = ["--job-poll-interval", "0.1"]


def auth(key: str | None) -> dict[str, str]:
    """The headers that present API key ``key`` (none for None)."""
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def train(base: str, key: str | None = None, **arguments: object) -> dict:
    """Start a training and wait until it has ended; returns the training object."""
    started = requests.post(f"{base}/v2/models/{MODEL}/train/", json=arguments, headers=auth(key), timeout=30)
    assert started.status_code == 200, started.text
    return wait_for(base, started.json()["uuid"], key=key)


def wait_for(base: str, uuid: str, timeout: float = 120, key: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        training = requests.get(f"{base}/v2/models/{MODEL}/train/{uuid}", headers=auth(key), timeout=30).json()
        if training["status"] not in ("pending", "running") or time.monotonic() > deadline:
            return training
        time.sleep(0.1)


def predict(base: str, model: str, x: int = 1, key: str | None = None) -> requests.Response:
    return requests.post(f"{base}/v2/models/{model}/predict/", json={"x": x}, headers=auth(key), timeout=150)


def versions(base: str, key: str | None = None) -> dict:
    listing = requests.get(f"{base}/v2/models/{MODEL}/versions/", headers=auth(key), timeout=30)
    assert listing.status_code == 200, listing.text
    return listing.json()


def until(condition, timeout: float = 30):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return result
