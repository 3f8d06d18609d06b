"""The gRPC server (``--grpc-port``): a ``grpc.aio`` server in the HTTP server's event loop
and process, serving one service per model beside server reflection and the standard health
service (``grpc.health.v1``).

It shares everything with the HTTP front: the models (their workers and batching), the job
runner, the API keys, the shutdown drain and the metrics. The application starts it once
the models and the job database are up and stops it before them (``api/app.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from deepaas_like.exceptions import StartupError, Unauthorized
from deepaas_like.grpc_api.messages import Messages, new_pool
from deepaas_like.grpc_api.service import ModelService, Shared, caller_of, metadata_of
from deepaas_like.grpc_api.status import status_of
from deepaas_like.protos.model_protos import ModelProtos
from deepaas_like.serving.served import ServedModel

__all__ = ["GrpcServer", "HEALTH_INTERVAL", "HEALTH_SERVICE"]

LOG = logging.getLogger(__name__)
HEALTH_SERVICE = "grpc.health.v1.Health"
#: Seconds between updates of the health service from the models' workers and the database.
HEALTH_INTERVAL = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """The gRPC front of ``models``. :meth:`start` listens on ``listen-ip:grpc-port``;
    :meth:`shutting_down` stops taking calls and gives those running ``shutdown-timeout``
    seconds; :meth:`stop` ends it.
    """

    def __init__(self, models: dict[str, ServedModel], shared: Shared) -> None:
        self.models = models
        self.shared = shared
        self.pool = new_pool()
        for module in (health_pb2, reflection_pb2):  # reflection describes these services too
            self.pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
        self.protos = {name: ModelProtos.build(model.schemas) for name, model in models.items()}
        for warning in (warning for protos in self.protos.values() for warning in protos.warnings):
            LOG.warning("gRPC: %s", warning)
        self.services = [
            ModelService(model, self.protos[name], Messages(self.protos[name], self.pool), shared)
            for name, model in models.items()
        ]
        self.health = health_aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_updates: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._serving: dict[str, bool] = {}

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6) that the server listens on."""
        host, port = self.shared.settings.listen_ip, self.shared.settings.grpc_port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        """Listen and serve. Raises :class:`StartupError` when the address cannot be bound."""
        settings = self.shared.settings
        options = [
            # A port in use is an error, as for HTTP, unless several server processes share
            # it (the supervisor checked it was free).
            ("grpc.so_reuseport", 1 if settings.server_processes > 1 else 0),
            ("grpc.max_receive_message_length", settings.client_max_size or -1),
            ("grpc.max_send_message_length", -1),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(tuple(service.handler() for service in self.services))
        names = [protos.service for protos in self.protos.values()]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.doc_endpoint:
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                _Reflection([*names, HEALTH_SERVICE, reflection.SERVICE_NAME], self.shared, pool=self.pool), server
            )
        try:
            server.add_insecure_port(self.address)
        except RuntimeError:  # grpc says no more than "Failed to bind" (and logs why on stderr)
            raise StartupError(
                f"cannot listen on {self.address} for gRPC (--grpc-port): the port is in use, "
                "or the address is not one of this host's"
            ) from None
        await self._update_health()
        await server.start()
        self._server = server
        self._health_updates = asyncio.create_task(self._keep_health())
        LOG.debug("gRPC on %s: %s", self.address, ", ".join(names))  # the start line says it, with the URLs

    def shutting_down(self) -> None:
        """Stop taking calls (health answers NOT_SERVING); calls running get ``shutdown-timeout``
        seconds (predictions that cannot finish in it are answered UNAVAILABLE by the drain)."""
        if self._server is not None and self._stopping is None:
            if self._health_updates is not None:
                self._health_updates.cancel()
            self._stopping = asyncio.create_task(self._stop(self._server, self.shared.settings.shutdown_timeout))

    async def stop(self) -> None:
        """Stop at once what :meth:`shutting_down` left running."""
        self.shutting_down()
        if self._stopping is not None:
            await self._stopping
        if self._health_updates is not None:
            self._health_updates.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_updates

    async def _stop(self, server: grpc.aio.Server, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await server.stop(grace)

    async def _keep_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            try:
                await self._update_health()
            except Exception:  # noqa: BLE001 - health must keep being told
                LOG.exception("cannot update the gRPC health service")

    async def _update_health(self) -> None:
        """Each model's service is SERVING while it has a live worker; the server (``""``)
        while every model does and the job database answers, as ``/readyz``."""
        statuses = {self.protos[name].service: model.unavailable() is None for name, model in self.models.items()}
        statuses[""] = (
            self.shared.calls.jobs is not None and self.shared.calls.jobs.database_up and all(statuses.values())
        )
        for service, serving in statuses.items():
            if self._serving.get(service) != serving:  # watchers hear of changes only
                self._serving[service] = serving
                await self.health.set(service, _SERVING if serving else _NOT_SERVING)


class _Reflection(reflection.aio.ReflectionServicer):
    """Server reflection, which requires the API key when ``--auth-docs`` is on (it documents
    the API, as the OpenAPI document does)."""

    def __init__(self, service_names: list[str], shared: Shared, pool: object) -> None:
        super().__init__(service_names, pool=pool)
        self._shared = shared

    # The stubs declare a coroutine; the servicer it extends is an async generator, as this is.
    async def ServerReflectionInfo(  # type: ignore[override]
        self, request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        settings = self._shared.settings
        if settings.auth_docs:
            try:
                caller_of(metadata_of(context), settings)
            except Unauthorized as error:
                status = status_of(error)
                await context.abort(status.code, status.details, status.trailing_metadata)
        async for response in super().ServerReflectionInfo(request_iterator, context):  # type: ignore[attr-defined]
            yield response
