"""Fetch the page decoder's runtime, onnxruntime-web (pinned), from the npm registry at install time:

    python ui/vendor/fetch_onnxruntime_web.py              # the pinned version (VERSION), checked (SHA256SUMS)
    python ui/vendor/fetch_onnxruntime_web.py --refresh 1.32.0   # pin another version (rewrites both files)

The three files the page needs (the WebAssembly-only build: its script, the Emscripten loader, the SIMD binary,
15 MB together) are not committed: ``VERSION`` pins the tarball's address and the registry's sha512 of it, and
``SHA256SUMS`` the files taken out of it. A fetch checks both; files already here that match are kept. The app
never downloads anything at run time: without these files the page's decoder is off and the server decodes
every click (ui/page_decoder.py says so in its log).
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


def pinned(dest: Path = HERE) -> dict:
    """The recorded sha256 of each file (SHA256SUMS)."""
    return dict(line.split()[::-1] for line in (dest / "SHA256SUMS").read_text().splitlines() if line.strip())


def present(dest: Path = HERE) -> bool:
    """Whether every file is here with its pinned digest."""
    sums = pinned(dest)
    return all((dest / n).is_file() and hashlib.sha256((dest / n).read_bytes()).hexdigest() == sums.get(n)
               for n in FILES)


def _download(url: str, integrity: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as r:
        blob = r.read()
    algo, _, expected = integrity.partition("-")
    if algo != "sha512" or base64.b64encode(hashlib.sha512(blob).digest()).decode() != expected:
        raise SystemExit(f"{url}: the download does not match the pinned integrity {integrity}")
    return blob


def _extract(blob: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {name: tar.extractfile(f"package/dist/{name}").read() for name in FILES}


def fetch(dest: Path = HERE) -> None:
    """The pinned files into ``dest``, every digest checked (nothing written when one differs)."""
    if present(dest):
        return
    _, url, integrity = _version(dest)
    files = _extract(_download(url, integrity))
    sums = pinned(dest)
    for name, data in files.items():
        if hashlib.sha256(data).hexdigest() != sums[name]:
            raise SystemExit(f"{name} from {url} does not match SHA256SUMS")
    for name, data in files.items():
        (dest / name).write_bytes(data)


def _version(dest: Path):
    """(``name version``, tarball URL, integrity) from VERSION."""
    lines = (dest / "VERSION").read_text().splitlines()
    return lines[0], lines[1], lines[2]


def refresh(version: str, registry: str = REGISTRY, dest: Path = HERE) -> dict:
    """Pin ``version``: its registry metadata gives the tarball and its sha512; VERSION and SHA256SUMS rewritten."""
    with urllib.request.urlopen(f"{registry}/{PACKAGE}/{version}", timeout=60) as r:
        meta = json.load(r)
    dist = meta["dist"]
    files = _extract(_download(dist["tarball"], dist["integrity"]))
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (dest / "VERSION").write_text(f"{PACKAGE} {meta['version']}\n{dist['tarball']}\n{dist['integrity']}\n")
    (dest / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return sums


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--refresh":
        for name, digest in refresh(sys.argv[2]).items():
            print(digest, name)
    elif len(sys.argv) == 1:
        fetch()
        print(f"{_version(HERE)[0]}: {', '.join(FILES)} in {HERE}")
    else:
        raise SystemExit(__doc__)
