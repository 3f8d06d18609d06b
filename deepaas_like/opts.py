"""Options for oslo-config-generator (entry point ``oslo.config.opts``: ``deepaas_like``)."""

from __future__ import annotations

from deepaas_like import config


def list_opts() -> list[tuple[str, list]]:
    """Every option, in the DEFAULT group, and the per-model options of a ``[model:NAME]`` section."""
    return [("DEFAULT", list(config.ALL_OPTS)), (config.MODEL_SECTION + "name", list(config.MODEL_OPTS))]
