"""Typed keys of the state the application holds (``app[KEY]``)."""

from __future__ import annotations

import asyncio
import collections

from aiohttp import web

from deepaas_like.api.links import Links
from deepaas_like.jobs.service import Jobs
from deepaas_like.serving.calls import CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings

__all__ = [
    "CALLS",
    "DRAIN",
    "JOBS",
    "LINKS",
    "LOG_BUFFER",
    "MODELS",
    "SETTINGS",
    "SHUTTING_DOWN",
    "MODEL_VERSIONS",
]

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", dict[str, ServedModel])
JOBS = web.AppKey("jobs", Jobs)
#: The call service every handler of a model's call goes through.
CALLS = web.AppKey("calls", CallService)
#: The versions trainings made, served lazily under their own ids.
MODEL_VERSIONS = web.AppKey("model_versions", ModelVersions)
#: Set when the server starts shutting down, so that long-lived streams end.
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
LINKS = web.AppKey("links", Links)
#: Predictions waiting for a model, answered 503 when the shutdown timeout runs out.
DRAIN = web.AppKey("drain", Drain)
#: Recent log lines, served at /debug.
LOG_BUFFER = web.AppKey("log_buffer", collections.deque)
