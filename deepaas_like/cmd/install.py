"""``deepaas-like-cli install``: install a model plugin without letting its requirements
change the server's own dependencies.

Real DEEPaaS plugins pin ``deepaas~=2.1.0`` or ``webargs~=5.5`` in their requirements; a
plain ``pip install`` then downgrades webargs, apispec, oslo.config and stevedore, and the
server no longer starts. This command, for each plugin:

1. asks pip what the plugin requires (``pip install --dry-run --no-deps --report``);
2. leaves out ``deepaas`` (deepaas_like provides the ``deepaas.model.v2`` modules plugins
   import: :mod:`deepaas_like.model.deepaas_compat`) and any requirement on a package the
   server uses whose range excludes the installed version (that version is kept, and the
   difference reported);
3. installs the other requirements with pip, under a constraints file that pins every
   package of the server to its installed version, then the plugin itself with
   ``--no-deps``.

Imports only the standard library and ``packaging``: it must run where a plain
``pip install`` of a plugin already broke the server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from deepaas_like.cmd import dependencies

__all__ = ["PROVIDED", "Plan", "main", "plan"]

PROVIDED = {"deepaas": "deepaas_like provides the deepaas.model.v2 modules plugins import (doc/migration.rst)"}


@dataclass
class Plan:
    """What installing one plugin does: ``install`` are requirement strings handed to pip,
    ``left_out`` says why each other requirement is not.
    """

    plugin: str
    install: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def plan(name: str, requires_dist: list[str], extras: list[str], server: dict[str, str]) -> Plan:
    """Sort a plugin's requirements (``Requires-Dist`` lines) against ``server`` (canonical
    name -> installed version of the server's packages).
    """
    result = Plan(name)
    for line in requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            result.left_out.append(f"{line}: not a valid requirement")
            continue
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        key = canonicalize_name(requirement.name)
        if key in PROVIDED:
            result.left_out.append(f"{requirement}: {PROVIDED[key]}")
        elif key in server and not requirement.specifier.contains(server[key], prereleases=True):
            result.left_out.append(f"{requirement}: keeping {requirement.name} {server[key]}, which deepaas_like needs")
        else:
            result.install.append(str(requirement))
    return result


def _pip(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "pip", *args])


def _inspect(spec: str, editable: bool, pip_options: list[str]) -> list[dict]:
    """pip's installation report of ``spec`` alone (nothing is installed)."""
    with tempfile.TemporaryDirectory(prefix="deepaas-like-install-") as workdir:
        report = os.path.join(workdir, "report.json")
        command = [
            "install",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            "--report",
            report,
            *pip_options,
        ]
        if _pip(*command, *(["-e"] if editable else []), spec) != 0:
            raise SystemExit(f"deepaas-like-cli install: pip cannot read {spec}")
        with open(report) as handle:
            return json.load(handle)["install"]


def _parser() -> argparse.ArgumentParser:
    """The options of ``deepaas-like-cli install``."""
    parser = argparse.ArgumentParser(
        prog="deepaas-like-cli install",
        description="Install model plugins (paths, names or URLs, as pip takes them) without letting their "
        "requirements change the server's own packages: 'deepaas' is left out (deepaas_like provides what "
        "plugins import from it) and the server's packages keep their installed versions.",
        allow_abbrev=False,  # as every parser of deepaas-like-cli: no option is taken by a prefix
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="what pip install would take: a path, a name, a URL")
    parser.add_argument("-e", "--editable", action="store_true", help="install the plugins in editable mode")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    parser.add_argument(
        "--pip-option",
        action="append",
        default=[],
        metavar="OPT",
        help="passed to pip, e.g. --pip-option=--index-url=https://...; repeat for several",
    )
    return parser


def main(argv: list[str]) -> int:
    """``deepaas-like-cli install [-e] [--dry-run] [--pip-option OPT] SPEC...``; exit code 0,
    or 1 when pip fails or the server's dependencies end up out of range.
    """
    options = _parser().parse_args(argv)
    server = dependencies.installed_closure()
    plans: list[tuple[str, Plan]] = []
    for spec in options.specs:
        for item in _inspect(spec, options.editable, options.pip_option):
            metadata = item["metadata"]
            plans.append(
                (
                    spec,
                    plan(
                        metadata["name"],
                        metadata.get("requires_dist") or [],
                        item.get("requested_extras") or [],
                        server,
                    ),
                )
            )
    for _, planned in plans:
        print(f"{planned.plugin}: installing with {', '.join(planned.install) or 'no requirements'}")
        for reason in planned.left_out:
            print(f"{planned.plugin}: left out {reason}")
    if options.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="deepaas-like-install-") as workdir:
        constraints = os.path.join(workdir, "server-constraints.txt")
        with open(constraints, "w") as handle:
            handle.writelines(f"{name}=={version}\n" for name, version in sorted(server.items()))
        requirements = sorted({line for _, planned in plans for line in planned.install})
        if requirements and _pip("install", "-c", constraints, *options.pip_option, *requirements) != 0:
            print(
                "deepaas-like-cli install: pip could not install the plugins' requirements beside the server's "
                "packages (above: the conflict)",
                file=sys.stderr,
            )
            return 1
        for spec, _ in plans:
            if _pip("install", "--no-deps", *options.pip_option, *(["-e"] if options.editable else []), spec) != 0:
                return 1
    problems = dependencies.problems()
    for problem in problems:
        print(f"deepaas-like-cli install: {problem}", file=sys.stderr)
    return 1 if problems else 0
