"""The practical limit: a bare aiohttp app that calls a plugin's ``predict`` in its own process.

No worker process, no OpenAPI, no job database: parse the form, load it with the plugin's
marshmallow arguments, call ``predict``, answer JSON as DEEPaaS does. Usage::

    python benchmarks/bare_app.py --port 5000 --model-name trivial
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Any

import marshmallow
from aiohttp import web


def load_plugin(name: str, group: str = "deepaas.v2.model") -> Any:
    """The module (or instance of the class) that entry point ``name`` names."""
    found = entry_points(group=group, name=name)
    if not found:
        raise SystemExit(f"no entry point {name!r} in {group}")
    plugin = next(iter(found)).load()
    return plugin() if isinstance(plugin, type) else plugin


def make_app(plugin: Any, name: str) -> web.Application:
    """One route, ``POST /v2/models/{name}/predict/``: 200 ``{"status", "predictions"}`` or 422."""
    schema = marshmallow.Schema.from_dict(plugin.get_predict_args())(unknown=marshmallow.EXCLUDE)

    async def predict(request: web.Request) -> web.Response:
        raw = {**request.query, **(await request.post())}
        try:
            kwargs = schema.load(raw)
        except marshmallow.ValidationError as error:
            return web.json_response(error.messages, status=422)
        return web.json_response({"status": "OK", "predictions": plugin.predict(**kwargs)})

    app = web.Application()
    app.router.add_post(f"/v2/models/{name}/predict/", predict)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-name", default="trivial")
    args = parser.parse_args(argv)
    plugin = load_plugin(args.model_name)
    if hasattr(plugin, "warm"):
        plugin.warm()
    web.run_app(make_app(plugin, args.model_name), host=args.listen_ip, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
