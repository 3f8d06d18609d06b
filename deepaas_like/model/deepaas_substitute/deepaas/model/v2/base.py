"""``deepaas.model.v2.base``: the plugin base class."""

from deepaas_like.model.base import BaseModel

__all__ = ["BaseModel"]
