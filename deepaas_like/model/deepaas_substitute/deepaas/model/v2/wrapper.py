"""``deepaas.model.v2.wrapper``: the classes plugins use to build or check files."""

from deepaas_like.model.files import ReturnedFile, UploadedFile

__all__ = ["ReturnedFile", "UploadedFile"]
