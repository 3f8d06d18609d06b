"""Metrics reported by plugin code: checked where they are reported, numbered by step."""

from __future__ import annotations

import math

import pytest

from deepaas_like import progress


@pytest.fixture
def sent():
    reports: list[tuple] = []
    progress.install(lambda *report: reports.append(report))
    yield reports
    progress.install(None)


def test_metrics_travel_with_their_step(sent):
    progress.report(0.5, "epoch 1", metrics={"loss": 0.25, "accuracy": 1}, step=1)
    progress.report(metrics={"loss": 0.2})
    assert sent == [(0.5, "epoch 1", {"loss": 0.25, "accuracy": 1.0}, 1), (None, None, {"loss": 0.2}, None)]


@pytest.mark.parametrize(
    ("metrics", "step", "error"),
    [
        ({"loss": "low"}, None, TypeError),
        ({"loss": True}, None, TypeError),
        ({"loss": math.nan}, None, ValueError),
        ({"loss": math.inf}, None, ValueError),
        ({"loss": 1.0}, -1, TypeError),
        ({"loss": 1.0}, 1.5, TypeError),
    ],
)
def test_bad_metrics_are_refused_where_they_are_reported(sent, metrics, step, error):
    with pytest.raises(error, match="loss|step"):
        progress.report(metrics=metrics, step=step)
    assert sent == []
