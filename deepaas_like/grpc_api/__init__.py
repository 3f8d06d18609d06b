"""The gRPC front (``--grpc-port``), beside the HTTP one: a service per model, generated from
the plugin's schemas (:mod:`deepaas_like.protos`), with reflection and health. It needs the
``grpc`` extra; this module imports nothing of it, so that the rest of the server runs without.
"""

from __future__ import annotations

from deepaas_like.protos import EXTRA, require

__all__ = ["EXTRA", "require"]
