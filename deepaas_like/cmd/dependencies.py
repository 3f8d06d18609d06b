"""The server's own dependencies as installed: checked at start-up, and pinned while a plugin
is installed (``deepaas-like-cli install``).

Imports only the standard library and ``packaging``, so that it runs before anything a
plugin's requirements may have downgraded (webargs, marshmallow, oslo.config, ...).
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["DISTRIBUTION", "installed_closure", "problems"]

DISTRIBUTION = "deepaas_like"


def _requirements(distribution: str, extras: tuple[str, ...] = ("",)) -> list[Requirement]:
    """The requirements of ``distribution`` that apply here with one of ``extras``."""
    found = []
    for line in metadata.requires(distribution) or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra}) for extra in extras):
            found.append(requirement)
    return found


def problems(distribution: str = DISTRIBUTION) -> list[str]:
    """One sentence per direct requirement of ``distribution`` that is missing or installed
    in a version outside its range, saying how to fix it; [] when all are satisfied.
    """
    found = []
    for requirement in _requirements(distribution):
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            found.append(
                f"{requirement.name} is not installed; deepaas_like needs {requirement}: "
                f"run  pip install '{requirement}'"
            )
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            found.append(
                f"{requirement.name} {installed} is installed, but deepaas_like needs {requirement} "
                f"(a plugin's requirements may have changed it): run  pip install '{requirement}'  and install "
                "plugins with  deepaas-like-cli install PLUGIN  (see doc/migration.rst)"
            )
    return found


def installed_closure(distribution: str = DISTRIBUTION) -> dict[str, str]:
    """Canonical name -> installed version of ``distribution`` and every installed package it
    depends on, transitively (requirements of its installed extras included).
    """
    versions: dict[str, str] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(distribution, ("",))]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in versions:
            continue
        try:
            versions[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if key == canonicalize_name(distribution):
            extras = ("", *(metadata.metadata(name).get_all("Provides-Extra") or []))
        for requirement in _requirements(name, extras):
            pending.append((requirement.name, ("", *requirement.extras)))
    return versions
