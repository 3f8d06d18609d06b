"""The plugin contract as an abstract base class (DEEPaaS V2's ``BaseModel``).

Plugins need not subclass it: a module with the same functions works. Every hook is
optional except ``predict`` for the predict endpoint and ``train`` for the train endpoint.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the package imports without marshmallow (see cmd/run.py's start-up check)
    from marshmallow import fields

__all__ = ["BaseModel"]


class BaseModel(abc.ABC):
    """What a model plugin may define; the server calls these in worker processes."""

    #: Optional: ``dict[str, Field]`` or a ``marshmallow.Schema`` subclass that predictions
    #: are validated against.
    schema: Any = None

    def warm(self) -> None:  # noqa: B027 - optional hook: doing nothing is the default
        """Load weights once per worker, before the worker takes work."""

    def get_metadata(self) -> dict[str, Any]:
        """Describe the model; merged over ``{"id", "name", "links"}``."""
        return {}

    def get_predict_args(self) -> dict[str, fields.Field]:
        """Arguments of :meth:`predict`, as marshmallow fields keyed by argument name."""
        return {}

    @abc.abstractmethod
    def predict(self, **kwargs: Any) -> Any:
        """Return JSON-able data, ``bytes``, a binary file object or a path to a file."""

    def get_train_args(self) -> dict[str, fields.Field]:
        """Arguments of :meth:`train`, as marshmallow fields keyed by argument name."""
        return {}

    def train(self, **kwargs: Any) -> Any:
        """Train; the JSON-able return value becomes the training's ``result.output``."""
        raise NotImplementedError

    def save(self, path: str) -> None:
        """Optional, with :meth:`load`: write the state :meth:`train` left into the empty
        directory ``path``. Each training then makes a model version, served apart.
        """
        raise NotImplementedError

    def load(self, path: str) -> None:
        """Optional, with :meth:`save`: take on the state :meth:`save` wrote into ``path``
        (called after :meth:`warm` in each worker serving that version).
        """
        raise NotImplementedError
