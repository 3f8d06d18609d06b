"""The ``deepaas`` modules DEEPaaS plugins import, for servers without the ``deepaas`` package.

Plugins built from the ai4os module template import from DEEPaaS itself:
``from deepaas.model.v2.wrapper import UploadedFile`` (to build uploads, or to check the
class of what they receive) and ``from deepaas.model.v2.base import BaseModel``.
deepaas_like does not depend on DEEPaaS: DEEPaaS 2.6 requires ``webargs<6``,
``oslo.config<9`` and ``stevedore<4``, which the server cannot run with. So:

- where the real ``deepaas`` package is importable, plugins import it as usual, and
  :func:`upload_class` makes the worker hand them uploads of DEEPaaS's own class;
- where it is not, :func:`install` puts the folder ``deepaas_substitute`` last on
  ``sys.path``: its ``deepaas`` package provides those few modules, made of deepaas_like's
  classes (``deepaas.model.v2.wrapper.UploadedFile is deepaas_like.UploadedFile``). Any
  other ``deepaas`` module still raises ``ModuleNotFoundError``. Processes a plugin starts
  with multiprocessing's ``spawn`` inherit ``sys.path``, so they import the plugin too.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

from deepaas_like.model.files import UploadedFile

__all__ = ["SUBSTITUTE_PATH", "as_upload", "install", "upload_class"]

LOG = logging.getLogger(__name__)
SUBSTITUTE_PATH = os.path.join(os.path.dirname(__file__), "deepaas_substitute")


def install() -> None:
    """Make ``import deepaas.model.v2.wrapper`` (and ``.base``) work in this process.

    Idempotent. The folder goes last on ``sys.path``, so an installed ``deepaas`` wins.
    """
    if SUBSTITUTE_PATH not in sys.path:
        sys.path.append(SUBSTITUTE_PATH)


def upload_class() -> type:
    """The class a plugin expects its uploads to be: ``deepaas.model.v2.wrapper.UploadedFile``
    (DEEPaaS's own when the package is installed), else :class:`UploadedFile`.

    Call after :func:`install`. A real ``deepaas`` that fails to import is logged, and
    deepaas_like's class is used.
    """
    try:
        module = importlib.import_module("deepaas.model.v2.wrapper")
    except Exception as error:  # noqa: BLE001 - a broken deepaas must not stop the plugin
        LOG.warning(
            "the installed deepaas package fails to import (%s: %s); plugins receive deepaas_like.UploadedFile",
            type(error).__name__,
            error,
        )
        return UploadedFile
    return getattr(module, "UploadedFile", UploadedFile)


def as_upload(value: UploadedFile, cls: type) -> Any:
    """``value`` as an instance of ``cls`` (a DEEPaaS ``UploadedFile`` namedtuple)."""
    if cls is UploadedFile:
        return value
    return cls(**{field: getattr(value, field) for field in cls._fields})  # type: ignore[attr-defined]
