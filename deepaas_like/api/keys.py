"""Typed keys of the state the application holds (``app[KEY]``)."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from aiohttp import web

from deepaas_like.api.links import Links
from deepaas_like.jobs.runner import JobRunner
from deepaas_like.serving.calls import CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings

if TYPE_CHECKING:  # the grpc extra may be missing: the key is only set when gRPC is on
    from deepaas_like.grpc_api.server import GrpcServer

__all__ = [
    "CALLS",
    "DRAIN",
    "GRPC",
    "JOBS",
    "LINKS",
    "LOG_BUFFER",
    "MODELS",
    "SETTINGS",
    "SHUTTING_DOWN",
    "VERSIONS",
]

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", dict[str, ServedModel])
JOBS = web.AppKey("jobs", JobRunner)
#: The call service every handler of a model's call goes through.
CALLS = web.AppKey("calls", CallService)
#: The versions trainings made, served lazily under their own ids.
VERSIONS = web.AppKey("versions", ModelVersions)
#: Set when the server starts shutting down, so that long-lived streams end.
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
LINKS = web.AppKey("links", Links)
#: Predictions waiting for a model, answered 503 when the shutdown timeout runs out.
DRAIN = web.AppKey("drain", Drain)
#: Recent log lines, served at /debug.
LOG_BUFFER = web.AppKey("log_buffer", collections.deque)
#: The gRPC server beside HTTP (``--grpc-port``).
GRPC: web.AppKey[GrpcServer] = web.AppKey("grpc")
