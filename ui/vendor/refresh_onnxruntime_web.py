"""Refresh the vendored onnxruntime-web files from the npm registry (run by hand when moving to a new version):

    python ui/vendor/refresh_onnxruntime_web.py 1.31.1

It reads the version's metadata from the registry, downloads its tarball, checks the tarball against the
registry's sha512 ``integrity``, takes out the three files the page needs (the WebAssembly-only build: its
script, the Emscripten loader and the SIMD WebAssembly binary), and writes ``VERSION`` and ``SHA256SUMS``
beside them. The app never downloads anything at run time: these files are committed, and
``tests/test_page_decoder.py`` checks them against ``SHA256SUMS``.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "onnxruntime-web"
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
HERE = Path(__file__).resolve().parent / PACKAGE
REGISTRY = "https://registry.npmjs.org"


def refresh(version: str, registry: str = REGISTRY, dest: Path = HERE) -> dict:
    with urllib.request.urlopen(f"{registry}/{PACKAGE}/{version}", timeout=60) as r:
        meta = json.load(r)
    dist = meta["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=300) as r:
        blob = r.read()
    algo, _, expected = dist["integrity"].partition("-")
    if algo != "sha512" or base64.b64encode(hashlib.sha512(blob).digest()).decode() != expected:
        raise SystemExit(f"{dist['tarball']}: the download does not match the registry's integrity {dist['integrity']}")
    dest.mkdir(parents=True, exist_ok=True)
    sums = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for name in FILES:
            data = tar.extractfile(f"package/dist/{name}").read()
            (dest / name).write_bytes(data)
            sums[name] = hashlib.sha256(data).hexdigest()
    (dest / "VERSION").write_text(f"{PACKAGE} {meta['version']}\n{dist['tarball']}\n{dist['integrity']}\n")
    (dest / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return sums


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for name, digest in refresh(sys.argv[1]).items():
        print(digest, name)
