"""deepaas_like: serve pip-installed DEEPaaS V2 model plugins as a documented REST API."""

from importlib import metadata

from deepaas_like.model.base import BaseModel
from deepaas_like.model.files import ReturnedFile, UploadedFile

try:
    __version__ = metadata.version("deepaas_like")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["BaseModel", "ReturnedFile", "UploadedFile", "__version__"]
