"""ProgressDisplay: JSON lines off a terminal, a tqdm bar on one."""

from __future__ import annotations

import io
import json
import os
import pty
import sys

import pytest

from deepaas_like.client import ProgressDisplay


def job(status: str, progress: float | None = None, events=(), metrics=None) -> dict:
    document = {"uuid": "abc", "status": status, "progress": progress, "events": list(events)}
    if metrics is not None:
        document["metrics"] = metrics
    return document


EPOCH_1 = {"time": "2026-12-07 23:00:01.000001", "message": "epoch 1 of 2"}
EPOCH_2 = {"time": "2026-12-07 23:00:02.000002", "message": "epoch 2 of 2"}


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_say_each_change_once() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=False)
    display.update(job("pending"))
    display.update(job("pending"))  # nothing changed: no line
    display.update(job("running", 0.5, [EPOCH_1], {"loss": 0.5}))
    display.update(job("running", 0.5, [EPOCH_1], {"loss": 0.5}))
    display.update(job("running", 1.0, [EPOCH_1, EPOCH_2], {"loss": 0.25}))
    display.update(job("done", 1.0, [EPOCH_1, EPOCH_2], {"loss": 0.25}))
    display.close()
    assert lines(stream) == [
        {"uuid": "abc", "status": "pending", "progress": None},
        {"uuid": "abc", "status": "running", "progress": 0.5, **EPOCH_1, "metrics": {"loss": 0.5}},
        {"uuid": "abc", "status": "running", "progress": 1.0, **EPOCH_2, "metrics": {"loss": 0.25}},
        {"uuid": "abc", "status": "done", "progress": 1.0},
    ]


def test_several_new_messages_are_one_line_each_with_the_metrics_on_the_last() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=False)
    display.update(job("running", 1.0, [EPOCH_1, EPOCH_2], {"loss": 0.25}))
    assert [line.get("message") for line in lines(stream)] == ["epoch 1 of 2", "epoch 2 of 2"]
    assert [line.get("metrics") for line in lines(stream)] == [None, {"loss": 0.25}]


def test_a_terminal_gets_a_bar_with_status_percentage_metrics_and_messages_above() -> None:
    stream = io.StringIO()
    with ProgressDisplay(stream, tty=True) as display:
        display.update(job("running", 0.25, [EPOCH_1], {"loss": 0.5}))
        display.update(job("running", 0.75, [EPOCH_1], {"loss": 0.125}))
        display.update(job("done", 0.75, [EPOCH_1, EPOCH_2], {"loss": 0.125}))
    text = stream.getvalue()
    assert "\r" in text and "{" not in text  # redrawn in place, no JSON
    assert "running:  25%" in text and "running:  75%" in text and "loss=0.125" in text
    assert "done: 100%" in text  # a done job is full whatever it reported last
    assert "epoch 1 of 2\n" in text and "epoch 2 of 2\n" in text
    assert text.index("epoch 1 of 2") < text.index("running:  75%")
    assert text.endswith("\n")  # closed: the prompt starts on a line of its own


def test_tty_defaults_to_what_the_stream_says() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert ProgressDisplay(Terminal()).tty is True
    assert ProgressDisplay(io.StringIO()).tty is False


def test_a_terminal_that_says_no_size_still_gets_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pseudo-terminal made without a size (``script``, some CI runners) is 0 by 0: tqdm
    would draw nothing on such a stderr."""
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            assert os.get_terminal_size(follower).columns == 0
            monkeypatch.setattr(sys, "stderr", terminal)
            with ProgressDisplay() as display:
                assert display.tty
                display.update(job("running", 0.5, [EPOCH_1]))
        shown = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "epoch 1 of 2" in shown and "running:  50%|" in shown
