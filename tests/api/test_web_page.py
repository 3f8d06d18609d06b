"""The web page's files as the server serves them (``/web/``): open without a key, to this
server only (CSP), every file the page imports present, the pinned libraries unchanged and
with their licences, and nothing outside the page's folder reachable. The page itself, in
Chromium: tests/browser/test_web_*.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile

import pytest
import requests

from deepaas_like.api.web_page import WEB_ROOT

KEY = "web-s3cret"
STATIC = WEB_ROOT / "static"
VENDOR = STATIC / "vendor"


@pytest.fixture(scope="module")
def keyed(module_server) -> str:
    """The demo behind a key that even the documents need (--auth-docs)."""
    return module_server("demo", args=["--auth-token", KEY, "--auth-docs"])


def test_the_page_and_its_files_load_without_a_key_while_the_api_needs_one(keyed):
    page = requests.get(keyed + "/web/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = requests.get(keyed + "/web/static/app.js", timeout=30)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert requests.get(keyed + "/openapi.json", timeout=30).status_code == 401
    headers = {"Authorization": f"Bearer {KEY}"}
    document = requests.get(keyed + "/openapi.json", headers=headers, timeout=30).json()
    assert "[the web page](web/)" in document["info"]["description"], "Swagger UI links to the page"


def test_every_file_of_the_page_is_served_with_its_media_type(keyed):
    types = {".js": "javascript", ".css": "text/css", ".json": "application/json"}
    files = [path for path in STATIC.rglob("*") if path.is_file() and path.suffix in types]
    assert any(path.name == "uPlot.esm.js" for path in files)
    for path in files:
        answer = requests.get(f"{keyed}/web/static/{path.relative_to(STATIC).as_posix()}", timeout=30)
        assert answer.status_code == 200, path
        assert types[path.suffix] in answer.headers["Content-Type"], path
        assert answer.content == path.read_bytes()


@pytest.mark.parametrize(
    "path", ["/web/static/nothing.js", "/web/static/%2e%2e/index.html", "/web/static/..%2F..%2Fweb_page.py"]
)
def test_only_the_pages_own_files_are_served(keyed, path):
    answer = requests.get(keyed + path, timeout=30)
    assert answer.status_code == 404 and answer.json()["message"]


def test_every_module_the_page_imports_is_one_of_its_files():
    imports = re.compile(r"""(?:import|from)\s*(?:[\w{}\s,*]+from\s*)?["'](\.[^"']+)["']""")
    for script in STATIC.rglob("*.js"):
        if VENDOR in script.parents:
            continue
        for target in imports.findall(script.read_text()):
            assert (script.parent / target).resolve().is_file(), f"{script.name} imports {target}"


def test_the_pages_own_files_fetch_nothing_from_elsewhere():
    own = [WEB_ROOT / "index.html", *(p for p in STATIC.rglob("*") if p.is_file() and VENDOR not in p.parents)]
    for path in own:
        text = path.read_text()
        assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text), path
        assert 'fetch("http' not in text and "fetch('http" not in text, path


def test_the_pinned_libraries_are_unchanged_and_carry_their_licences():
    records = json.loads((VENDOR / "assets.json").read_text())
    assert set(records) == {"uplot", "fflate"}
    for name, record in records.items():
        assert record["license"] == "MIT"
        for file, digest in record["sha256"].items():
            assert hashlib.sha256((VENDOR / name / file).read_bytes()).hexdigest() == digest, f"{name}/{file}"
        assert "Permission is hereby granted" in (VENDOR / name / "LICENSE").read_text()


def test_no_page_without_the_documents(run_server):
    server = run_server("demo", args=["--nodoc-endpoint"])
    assert requests.get(server + "/web/", timeout=30).status_code == 404
    assert requests.get(server + "/web/static/app.js", timeout=30).status_code == 404
    links = requests.get(server + "/", timeout=30).json()["links"]
    assert links == []


def test_the_wheel_carries_every_file_of_the_page(tmp_path):
    # package_data in setup.cfg lists them by pattern: a new folder would be left out of
    # the wheel users install while an editable install still finds it.
    root = WEB_ROOT.parents[2]
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path]
    subprocess.run([*command, str(root)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("deepaas_like-*.whl")
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("deepaas_like/api/web/")}
    files = {path.relative_to(root).as_posix() for path in WEB_ROOT.rglob("*") if path.is_file()}
    assert files and packed == files
