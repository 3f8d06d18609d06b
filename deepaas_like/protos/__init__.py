"""A model's gRPC API as protocol buffers, for both fronts: the gRPC server serves it, the
HTTP front and the CLI hand out its ``.proto`` text. Needs protobuf (the ``grpc`` extra);
importing this package does not: :func:`proto_file` checks the extra first.
"""

from __future__ import annotations

import importlib.util

from deepaas_like.exceptions import ExtraNotInstalled
from deepaas_like.serving.schemas import ModelSchemas

__all__ = ["EXTRA", "proto_file", "require"]

#: The modules of the ``grpc`` extra, and the package providing each.
EXTRA = {
    "grpc": "grpcio",
    "grpc_reflection": "grpcio-reflection",
    "grpc_health": "grpcio-health-checking",
    "grpc_status": "grpcio-status",
    "google.protobuf": "protobuf",
    "google.rpc": "googleapis-common-protos",
}


def require(feature: str) -> None:
    """Raise :class:`ExtraNotInstalled` naming ``feature`` and the install command unless
    every package of the ``grpc`` extra is installed.
    """
    missing = [package for module, package in EXTRA.items() if not _installed(module)]
    if missing:
        raise ExtraNotInstalled(
            f"{feature} needs the grpc extra ({', '.join(missing)} missing): pip install 'deepaas_like[grpc]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # its parent package is missing, or it was unloaded
        return False


def proto_file(model: ModelSchemas) -> tuple[str, str]:
    """The ``.proto`` file of ``model``'s gRPC service: (file name, text), the same file the
    gRPC server serves. Raises :class:`ExtraNotInstalled`.
    """
    require("the .proto files")
    # Imported once the extra is known to be there: both need protobuf.
    from deepaas_like.protos.model_protos import ModelProtos
    from deepaas_like.protos.text import proto_text

    protos = ModelProtos.build(model)
    return protos.file_name, proto_text(protos.file)
