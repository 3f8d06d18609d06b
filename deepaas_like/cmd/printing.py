"""What ``deepaas-like-cli`` writes, locally and with ``--url``: a JSON document on the
result stream (stdout), or into a file as DEEPaaS's ``deepaas-cli --deepaas_method_output``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments

__all__ = ["failed", "make_parent", "print_json", "write_json"]


def make_parent(path: str) -> None:
    """Make the folder ``path`` is to be written in, as DEEPaaS's deepaas-cli does."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def write_json(path: str, document: Any) -> None:
    """Write ``document`` as JSON to ``path``, its folder made if missing."""
    make_parent(path)
    with open(path, "w") as handle:
        json.dump(document, handle)


def print_json(document: Any, result: TextIO) -> int:
    """Print ``document`` indented on ``result`` and flush it; returns the exit code 0."""
    json.dump(document, result, indent=2)
    result.write("\n")
    result.flush()
    return 0


def failed(error: DeepaasLikeError | KeyboardInterrupt) -> int:
    """Say on stderr why the CLI stops, locally and with ``--url``; the exit code: 2 with
    the field messages (JSON) of invalid arguments, 1 with the message of another error,
    130 after Ctrl-C."""
    if isinstance(error, InvalidArguments):
        json.dump(error.messages, sys.stderr)
        sys.stderr.write("\n")
        return 2
    if isinstance(error, DeepaasLikeError):
        print(f"deepaas-like-cli: {error.message}", file=sys.stderr)
        return 1
    print("deepaas-like-cli: stopped", file=sys.stderr)
    return 130
