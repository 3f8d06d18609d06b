"""The web page (``<base-path>/web/``): one HTML document and its static files, generated in
the browser from the OpenAPI document (``/openapi.json``) and the V2 routes, as Swagger UI
is. Nothing of it runs on a request to the API: it costs the API nothing when unused.

The files live in ``deepaas_like/api/web/`` (the page's own JavaScript and CSS, and the
libraries under ``static/vendor/``, pinned with their licences by ``scripts/web_assets.py``).
Only files found there when the server starts are served, by name: no path from a request
reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "WEB_ROOT", "web_asset", "web_page"]

#: Where the page's files are, in the installed package.
WEB_ROOT = Path(__file__).with_name("web")
_STATIC = WEB_ROOT / "static"
_ASSETS: dict[str, Path] = {
    path.relative_to(_STATIC).as_posix(): path for path in sorted(_STATIC.rglob("*")) if path.is_file()
}

#: The page and its scripts come from this server only (CSP Level 3, W3C): nothing is
#: fetched from anywhere else, even if a plugin's metadata holds HTML. Answers are shown
#: from blob: URLs and base64 media inside JSON from data: URLs; uPlot sets inline styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # A new server version brings new files: check before using a cached copy.
    "Cache-Control": "no-cache",
}


async def web_page(request: web.Request) -> web.StreamResponse:
    """The page's HTML document. Its links are relative, so it works under any base path."""
    return web.FileResponse(WEB_ROOT / "index.html", headers=_HEADERS)


async def web_asset(request: web.Request) -> web.StreamResponse:
    """One static file of the page, by its name under ``web/static/``; 404 for any other."""
    path = _ASSETS.get(request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(reason="no such file of the web page")
    return web.FileResponse(path, headers=_HEADERS)
