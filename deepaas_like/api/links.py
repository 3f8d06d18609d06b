"""Absolute or relative URLs for links and ``Location`` headers.

Never built from the client's ``Host`` header: that would let any client make the server
hand out links to a host of its choosing. The origin is ``--public-url`` when set; else,
for requests arriving from a ``--trusted-proxies`` address, the proxy's
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-Prefix``; else none, and links
are relative (RFC 9110 section 10.2.2 allows a relative ``Location``).
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from yarl import URL

__all__ = ["Links"]


class Links:
    """Builds the URL of a path of this API (``path`` starts with ``/``, after ``base_path``)."""

    def __init__(self, base_path: str, public_url: str | None, trusted_proxies: tuple[str, ...]) -> None:
        self.base_path = base_path
        self.public_url = public_url.rstrip("/") if public_url else None
        self.trusted = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]

    def url_for(self, request: web.Request, name: str, **parts: str) -> str:
        """The URL of the route named ``name`` (see ``api/routes.py``) with its path
        ``parts`` filled in, e.g. ``url_for(request, "model", model_name="demo")``.
        """
        path = str(request.app.router[name].url_for(**parts))
        return self.url(request, path[len(self.base_path) :])

    def url(self, request: web.Request, path: str) -> str:
        """The URL of ``path`` (after the base path) of this API."""
        if self.public_url is not None:
            return self.public_url + path
        return self._forwarded_origin(request) + self.base_path + path

    def _forwarded_origin(self, request: web.Request) -> str:
        if not self.trusted or not self._from_trusted_proxy(request):
            return ""
        host = _first(request.headers.get("X-Forwarded-Host"))
        if not host:
            return ""
        scheme = _first(request.headers.get("X-Forwarded-Proto")) or request.scheme
        prefix = _first(request.headers.get("X-Forwarded-Prefix")).rstrip("/")
        try:
            origin = URL.build(scheme=scheme, authority=host, path=prefix if prefix.startswith("/") else "")
        except (ValueError, TypeError):
            return ""  # not a host and scheme a URL can be made of: ignored
        return str(origin).rstrip("/")

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(peer in network for network in self.trusted)


def _first(value: str | None) -> str:
    """The first element of a comma-separated forwarding header (the client-facing hop)."""
    return (value or "").split(",")[0].strip()
