"""Files the server makes for one browser (overlay frames, exports) or receives from it (uploads) are served to
that browser only; the image browser's thumbnails to the browsers it showed them to.

Every browser and API client gets a random client cookie (``iseg_client``, HttpOnly) on its first response;
Gradio's ``gradio_client`` keeps it from the config request, a browser from the page. A file is *owned* by the
client whose request made it (a thumbnail: by every client whose page of the browser showed it). Frames,
exports and thumbnails live in folders where every file needs an owner (a file there without a recorded owner
is refused too), and each upload's path is recorded as it is answered. A request for a file owned by another
client gets exactly the answer Gradio gives for a file that does not exist (403 "File not allowed"), so nobody
learns whether someone else's file is there; a handler given another client's file as an input refuses it the
same way.

The cookie is ``SameSite=Lax`` over plain HTTP and ``SameSite=None; Secure`` over HTTPS (a Space runs inside an
iframe of huggingface.co): a browser that refuses cookies altogether sees no frames.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Dict, List, Set

COOKIE = "iseg_client"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
_FILE_ROUTE = "/file="  # Gradio's file route: <root>/gradio_api/file=<path>
_UPLOAD_ROUTE = "/gradio_api/upload"


def _real(path) -> str:
    return os.path.realpath(os.fspath(path))


class OwnedFiles:
    """Who owns which served file: ``protect`` a folder (each file in it needs an owner), ``give`` a file to
    a client, ``allowed`` says whether a client may read a path. A file can have several owners: Gradio
    names an upload by its content, so everyone who uploaded the same bytes owns the one file."""

    def __init__(self):
        self._folders: List[str] = []
        self._owners: Dict[str, Set[str]] = {}
        self._lock = threading.Lock()

    def protect(self, folder: Path) -> None:
        real = _real(folder)
        with self._lock:
            if real not in self._folders:
                self._folders.append(real)

    def give(self, path, client: str) -> None:
        if client:
            with self._lock:
                self._owners.setdefault(_real(path), set()).add(client)

    def forget(self, path) -> None:
        with self._lock:
            self._owners.pop(_real(path), None)

    def owns(self, path, client: str) -> bool:
        """Whether ``client`` owns ``path`` (made it, or uploaded it)."""
        with self._lock:
            return bool(client) and client in self._owners.get(_real(path), ())

    def allowed(self, path, client: str) -> bool:
        """Whether ``client`` may read ``path``: a file nobody owns outside the protected folders is not this
        module's business (Gradio's own rules apply); an owned file, or any file in a protected folder, only
        for an owner."""
        real = _real(path)
        with self._lock:
            owners = self._owners.get(real)
            if owners is None:
                return not any(real.startswith(f + os.sep) for f in self._folders)
            return client in owners


OWNED = OwnedFiles()


def client_of(request) -> str:
    """The client cookie of a Gradio request ("" when there is none: no request, or a client that ignores
    cookies; such a client owns nothing)."""
    if request is None:
        return ""
    value = (getattr(request, "cookies", None) or {}).get(COOKIE, "")
    return value if _TOKEN.match(value or "") else ""


def _cookies(scope) -> Dict[str, str]:
    jar = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header: as if it had none of ours
                pass
    return {k: m.value for k, m in jar.items()}


def _https(scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    return any(k == b"x-forwarded-proto" and v.split(b",")[0].strip() == b"https" for k, v in scope.get("headers", []))


class ClientCookie:
    """ASGI middleware: gives each client its cookie, refuses owned files to anyone else, and records the
    owner of each upload."""

    def __init__(self, app, owned: OwnedFiles = OWNED):
        self.app = app
        self.owned = owned

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = _cookies(scope).get(COOKIE, "")
        fresh = not _TOKEN.match(client)
        if fresh:  # the request itself carries the new cookie, so its handlers see the owner they will have
            client = secrets.token_urlsafe(24)
            scope = dict(scope, headers=[*scope.get("headers", []), (b"cookie", f"{COOKIE}={client}".encode())])
        path = scope.get("path", "")
        if _FILE_ROUTE in path:
            target = path.split(_FILE_ROUTE, 1)[1]
            if target and not target.startswith(("http://", "https://")) and not self.owned.allowed(target, client):
                return await _not_allowed(send, target)
        upload = scope.get("method") == "POST" and path.endswith(_UPLOAD_ROUTE)
        body: List[bytes] = []

        async def reply(message):
            if message["type"] == "http.response.start" and fresh:
                attrs = "; SameSite=None; Secure" if _https(scope) else "; SameSite=Lax"
                cookie = f"{COOKIE}={client}; Path=/; HttpOnly; Max-Age=31536000{attrs}"
                message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", cookie.encode())])
            elif message["type"] == "http.response.body" and upload:
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    self._own_uploads(b"".join(body), client)
            await send(message)

        await self.app(scope, receive, reply)

    def _own_uploads(self, body: bytes, client: str) -> None:
        try:
            paths = json.loads(body)
        except ValueError:
            return
        for p in paths if isinstance(paths, list) else []:
            if isinstance(p, str):
                self.owned.give(p, client)


async def _not_allowed(send, target: str) -> None:
    """Gradio's own answer for a file that is not there, word for word."""
    body = json.dumps({"detail": f"File not allowed: {target}."}, ensure_ascii=False, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
