"""The DEEPaaS V2 compatible routes, and the model-version routes beside them."""

__all__: list[str] = []
