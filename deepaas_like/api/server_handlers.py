"""Handlers of the server's own routes (beside the DEEPaaS V2 ones): the OpenAPI document,
Swagger UI and its redirect, and the recent log lines.
"""

from __future__ import annotations

import collections
import json
import string

from aiohttp import web
from aiohttp_apigami.constants import SWAGGER_DICT

from deepaas_like.api.app_keys import LINKS, LOG_BUFFER
from deepaas_like.api.responses import json_response

__all__ = ["SWAGGER_UI_CONFIG", "debug", "openapi_document", "redirect_to_ui", "swagger_ui"]

#: Swagger UI's configuration (its ``SwaggerUIBundle`` options, docs/usage/configuration.md
#: of swagger-api/swagger-ui) beside the document URL, layout and presets of the page.
#: ``persistAuthorization`` keeps a key entered under Authorize across page reloads (in the
#: browser's localStorage for this origin); ``displayRequestDuration`` shows how long
#: Try-it-out took, which for a prediction is the model's time.
SWAGGER_UI_CONFIG: dict[str, object] = {
    "deepLinking": True,
    "persistAuthorization": True,
    "displayRequestDuration": True,
}

# Every URL is relative to the page (``<base-path>/api``): the page works at any base path,
# and behind a proxy that serves it under a prefix of its own. Swagger UI's files are the
# ones aiohttp-apigami ships (the version in its swagger_ui/VERSION), served from this
# server: the page fetches nothing from elsewhere.
# Swagger UI offers any answer with ``Content-Disposition: attachment`` (every binary
# prediction: api/responses.py) as a "Download file" link, and shows image/* answers
# inline only without it (its response-body.jsx); the response interceptor drops that
# header from what the page shows of a raster image answer, so that Try-it-out shows it.
_PAGE = string.Template(r"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>deepaas_like: Swagger UI</title>
    <link rel="stylesheet" type="text/css" href="static/swagger/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="static/swagger/index.css" />
    <link rel="icon" type="image/png" href="static/swagger/favicon-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="static/swagger/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="static/swagger/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle(Object.assign($config, {
        url: "swagger.json",
        dom_id: "#swagger-ui",
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [SwaggerUIBundle.plugins.DownloadUrl],
        layout: "StandaloneLayout",
        responseInterceptor: function (response) {
          var type = (response.headers && response.headers["content-type"]) || "";
          if (/^image\//i.test(type) && !/svg/i.test(type)) {
            delete response.headers["content-disposition"];
          }
          return response;
        },
      }));
    };
    </script>
  </body>
</html>
""").substitute(config=json.dumps(SWAGGER_UI_CONFIG))


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[SWAGGER_DICT])


async def swagger_ui(request: web.Request) -> web.StreamResponse:
    """Swagger UI on the server's document, with :data:`SWAGGER_UI_CONFIG`."""
    return web.Response(text=_PAGE, content_type="text/html")


async def redirect_to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[LINKS].url(request, "/api"))


async def debug(request: web.Request) -> web.Response:
    lines: collections.deque[str] = request.app[LOG_BUFFER]
    return web.Response(text="\n".join(lines), content_type="text/plain")
