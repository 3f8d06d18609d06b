"""API keys in the OpenAPI document, and the Swagger UI page that uses them: the security
schemes the server declares are the ones it accepts, on exactly the operations that answer
401 without a key (tests/browser drives the page in Chromium).
"""

from __future__ import annotations

import io
import re

import aiohttp

from deepaas_like.api.routes import ROUTES
from deepaas_like.api.security import Access
from tests.conftest import png_bytes

PREDICT = "/v2/models/demo/predict/"


def _image() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", io.BytesIO(png_bytes()), filename="x.png", content_type="image/png")
    return form


def _operations(document: dict) -> dict[tuple[str, str], dict]:
    """(METHOD, path) -> operation, of every operation in ``document``."""
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    }


def _route_access(base_path: str = "") -> dict[tuple[str, str], Access]:
    """(METHOD, path of the demo model) -> who may call it, from the route table."""
    return {(route.method, base_path + route.path.replace("{model_name}", "demo")): route.access for route in ROUTES}


async def test_without_api_keys_the_document_declares_no_security(serve_in_process):
    client = await serve_in_process("demo")
    document = await (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in document.get("components", {})
    assert [key for key, operation in _operations(document).items() if "security" in operation] == []


async def test_keys_are_declared_on_exactly_the_routes_that_need_one(serve_in_process):
    client = await serve_in_process("demo", auth_tokens=("s3cret",))
    document = await (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert {name: {k: v for k, v in scheme.items() if k != "description"} for name, scheme in schemes.items()} == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    assert "--auth-token" in schemes["bearer"]["description"]  # says which key to paste
    access = _route_access()
    operations = _operations(document)
    secured = {key for key, operation in operations.items() if "security" in operation}
    assert secured == {key for key in operations if access[key] is Access.KEY}
    assert ("POST", PREDICT) in secured and ("POST", "/v2/models/demo/train/") in secured
    for key in secured:  # either scheme is enough
        assert operations[key]["security"] == [{"bearer": []}, {"apiKey": []}], key
        assert "401" in operations[key]["responses"], key
    for open_route in (("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v2/models/"), ("GET", "/metrics")):
        assert "security" not in operations[open_route], open_route


async def test_every_declared_scheme_is_one_the_server_accepts(serve_in_process):
    client = await serve_in_process("demo", auth_tokens=("s3cret",))
    schemes = (await (await client.get("/openapi.json")).json())["components"]["securitySchemes"]
    for name, scheme in schemes.items():
        if scheme["type"] == "http":
            headers = {"Authorization": f"{scheme['scheme'].capitalize()} s3cret"}
        else:
            assert scheme["in"] == "header", name
            headers = {scheme["name"]: "s3cret"}
        assert (await client.post(PREDICT, data=_image(), headers=headers)).status == 200, name
        wrong = {header: value.replace("s3cret", "wrong") for header, value in headers.items()}
        assert (await client.post(PREDICT, data=_image(), headers=wrong)).status == 401, name


async def test_admin_keys_alone_declare_the_schemes_too(serve_in_process):
    client = await serve_in_process("demo", admin_tokens=("root",))
    document = await (await client.get("/openapi.json")).json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "security" in _operations(document)[("POST", PREDICT)]


async def test_auth_docs_secures_the_documents_too_but_not_the_probes(serve_in_process):
    client = await serve_in_process("demo", auth_tokens=("k",), auth_docs=True)
    document = await (await client.get("/openapi.json", headers={"X-API-Key": "k"})).json()
    access = _route_access()
    for key, operation in _operations(document).items():
        assert ("security" in operation) == (access[key] is not Access.OPEN), key
    assert "security" in _operations(document)[("GET", "/v2/models/demo/")]


async def test_swagger_ui_page_persists_keys_and_loads_only_this_servers_files(serve_in_process):
    client = await serve_in_process("demo", base_path="/deepaas")
    page = await client.get("/deepaas/api")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert '"persistAuthorization": true' in html
    # Relative URLs, fetched from this server under the base path.
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 5 and not [asset for asset in assets if "//" in asset or asset.startswith("/")]
    for asset in [*assets, "swagger.json"]:
        assert (await client.get("/deepaas/" + asset)).status == 200, asset
    assert (await client.get("/deepaas/ui", allow_redirects=False)).headers["Location"] == "/deepaas/api"
