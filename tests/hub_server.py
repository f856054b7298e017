"""A local HTTP server that answers file requests the way the Hugging Face Hub does.

``hf_hub_download`` sends ``HEAD`` then ``GET`` to ``{endpoint}/{repo_id}/resolve/{revision}/{filename}``
and needs ``X-Repo-Commit``, an ``ETag`` (for large files: ``X-Linked-Etag`` = the sha256) and the size.
"""
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, files, cut=None, rate=None):
        """``files``: {"owner/repo/path/in/repo": bytes}; a key that is not in the Hub's URL form is served as a
        plain file at ``/<key>`` (a GitHub release asset, say). ``cut``: {key: n} sends only the first n bytes
        of that file (announcing its full length) and closes the connection: a broken transfer. ``rate``: bytes
        per second to send file bodies at (a slow network, for progress bars)."""
        self.files = dict(files)
        self.cut = dict(cut or {})
        self.rate = rate
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _resolve(self):
                path = unquote(self.path.split("?")[0]).lstrip("/")
                server.requests.append((self.command, path))
                if path in server.files:
                    return server.files[path]
                parts = path.split("/")
                # owner / repo / "resolve" / revision / filename...
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                return server.files.get("/".join(parts[:2] + parts[4:]))

            def _headers(self, body):
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"%s"' % hashlib.sha1(body).hexdigest())
                self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(body).hexdigest())
                self.send_header("X-Linked-Size", str(len(body)))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                return True

            def do_HEAD(self):
                self._headers(self._resolve())

            def do_GET(self):
                body = self._resolve()
                if self._headers(body):
                    key = unquote(self.path.split("?")[0]).lstrip("/")
                    body = body[: server.cut[key]] if key in server.cut else body
                    step = max(1, int(server.rate / 10)) if server.rate else len(body) or 1
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start:start + step])
                        if server.rate:
                            time.sleep(step / server.rate)
                    if key in server.cut:
                        self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
