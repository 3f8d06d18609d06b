"""Console scripts. Their entry points check the server's own dependencies before importing
anything a plugin's requirements may have downgraded (webargs, marshmallow, oslo.config):
a version out of range is one line naming the package and the fix, not an import traceback.
"""

from __future__ import annotations

import sys

from deepaas_like.cmd import dependencies

__all__ = ["cli_main", "run_main"]


def _dependencies_ok(program: str) -> bool:
    problems = dependencies.problems()
    for problem in problems:
        print(f"{program}: {problem}", file=sys.stderr)
    return not problems


def run_main() -> int:
    """``deepaas-like-run``."""
    if not _dependencies_ok("deepaas-like-run"):
        return 1
    from deepaas_like.cmd.run import main

    return main()


def cli_main() -> int:
    """``deepaas-like-cli``; ``deepaas-like-cli install`` runs even when dependencies are off
    (it is how they are kept right), and imports nothing they provide.
    """
    if sys.argv[1:2] == ["install"]:
        from deepaas_like.cmd import install

        return install.main(sys.argv[2:])
    if not _dependencies_ok("deepaas-like-cli"):
        return 1
    from deepaas_like.cmd.cli import main

    return main()
