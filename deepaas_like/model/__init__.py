"""What runs beside the plugin in a worker: loading by entry point, the plugin adapter,
uploaded files, ``BaseModel`` and the DEEPaaS substitute package."""

__all__: list[str] = []
