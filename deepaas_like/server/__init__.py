"""The server object (:class:`Server`) that builds what every front serves, and the HTTP
application made from it (:func:`http_app`)."""

from deepaas_like.server.pools import PoolFactory, default_pools
from deepaas_like.server.server import Server, http_app

__all__ = ["PoolFactory", "Server", "default_pools", "http_app"]
