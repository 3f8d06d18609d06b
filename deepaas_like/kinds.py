"""The kinds of calls a model takes, named after the plugin's hooks ``predict`` and
``train``: one enum for the serving layer, the jobs and every front.
"""

from __future__ import annotations

import enum

__all__ = ["PREDICT", "TRAIN", "Kind"]


class Kind(enum.StrEnum):
    """A prediction or a training (equal to the strings ``"predict"`` and ``"train"``)."""

    PREDICT = "predict"
    TRAIN = "train"


PREDICT, TRAIN = Kind.PREDICT, Kind.TRAIN
