"""The serving layer, under every front: the call service, the router, served models with
their batching and autoscaling, model versions at run time, schemas, uploads and the drain."""

__all__: list[str] = []
