"""The HTTP front: the aiohttp application, its routes and handlers, argument decoding,
responses, OpenAPI, API keys on routes, metrics and probes. It decodes requests into calls of
the call service (:mod:`deepaas_like.serving.calls`) and encodes their answers."""

__all__: list[str] = []
