"""Fetch the web page's libraries from the npm registry, pinned, into the package.

Run at development time only (the server and its install need no Node toolchain and no
network): ``python scripts/web_assets.py``. Each package is downloaded as the registry's
tarball, checked against the ``integrity`` (SHA-512, Subresource Integrity format) that
``npm view NAME@VERSION dist.integrity`` prints, and the listed files and the licence are
copied to ``deepaas_like/api/web/static/vendor/NAME/``. ``vendor/assets.json`` records each
package's version, licence, source and the SHA-256 of every copied file;
``tests/api/test_web_page.py`` checks the files against it. To bump a library, change its
version and integrity here and run the script again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "deepaas_like" / "api" / "web" / "static" / "vendor"

#: name -> version, licence (SPDX), integrity, {file in the tarball: name in vendor/NAME/}.
PACKAGES: dict[str, dict[str, object]] = {
    # Charts of the trainings' metrics (MIT): small, fast, no dependencies.
    "uplot": {
        "version": "1.6.32",
        "license": "MIT",
        "integrity": "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        "files": {
            "package/dist/uPlot.esm.js": "uPlot.esm.js",
            "package/dist/uPlot.min.css": "uPlot.min.css",
            "package/LICENSE": "LICENSE",
        },
    },
    # Lists the files of a ZIP answer in the browser (MIT).
    "fflate": {
        "version": "0.8.3",
        "license": "MIT",
        "integrity": "sha512-tbZNuJrLwGUp3zshBtdy4W+ORxZuIh8a5ilyIEQDC5rY1f3U20JMry0Ll3WBzU58EZKsEuJFXhb5gwv8CsPvgA==",
        "files": {"package/esm/browser.js": "fflate.esm.js", "package/LICENSE": "LICENSE"},
    },
}

REGISTRY = "https://registry.npmjs.org"


def tarball(name: str, version: str, integrity: str) -> bytes:
    """The package's tarball from the registry; raises ValueError when its SHA-512 differs."""
    url = f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 - a fixed https URL
        data = answer.read()
    algorithm, expected = integrity.split("-", 1)
    got = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if got != expected:
        raise ValueError(f"{url}: {algorithm} {got} is not the pinned {expected}")
    return data


def vendor(name: str, package: dict[str, object]) -> dict[str, object]:
    """Copy the package's files into vendor/NAME/; its record for assets.json."""
    data = tarball(name, str(package["version"]), str(package["integrity"]))
    target = VENDOR / name
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = package["files"]  # type: ignore[assignment]
    hashes = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, copied in files.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise ValueError(f"{name}: {member} is not a file of the tarball")
            content = extracted.read()
            (target / copied).write_bytes(content)
            hashes[copied] = hashlib.sha256(content).hexdigest()
    return {
        "version": package["version"],
        "license": package["license"],
        "source": f"{REGISTRY}/{name}/-/{name}-{package['version']}.tgz",
        "integrity": package["integrity"],
        "sha256": hashes,
    }


def main() -> None:
    records = {name: vendor(name, package) for name, package in PACKAGES.items()}
    (VENDOR / "assets.json").write_text(json.dumps(records, indent=2) + "\n")
    for name, record in records.items():
        print(f"{name} {record['version']} ({record['license']}): {', '.join(record['sha256'])}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
