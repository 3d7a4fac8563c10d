"""A local stand-in for huggingface.co: enough of its HTTP API for huggingface_hub's client.

It serves one directory as every repository's files (``/{org}/{name}/resolve/{rev}/{file}``,
with HEAD, ETag/X-Repo-Commit headers and byte ranges, as the Hub does) and answers
``/api/models/{org}/{name}/auth-check``. ``refuse`` makes every request fail the way the Hub
fails for a gated (403 ``GatedRepo``) or missing (404 ``RepoNotFound``) repository. Point the
client at it with ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class FakeHub:
    """What the server serves; change ``refuse`` while it runs."""

    files: Path | None = None
    refuse: tuple[int, str] | None = None
    token: str | None = None  # when set, a request without ``Bearer <token>`` is refused (gated)
    requests: list[str] = field(default_factory=list)
    url: str = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            ranged = self.headers.get("Range")
            hub.requests.append(f"{self.command} {self.path}" + (f" [{ranged}]" if ranged else ""))
            refuse = hub.refuse
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                refuse = (403, "GatedRepo")
            if refuse is not None:
                status, code = refuse
                self._send(status, {"X-Error-Code": code} if code else {})
                return
            if self.path.startswith("/api/models/") and self.path.endswith("/auth-check"):
                self._send(200, {"Content-Type": "application/json"}, b"{}")
                return
            match = RESOLVE.match(self.path.split("?")[0])
            path = hub.files / match.group(3) if match and hub.files else None
            if path is None or not path.is_file():
                self._send(404, {"X-Error-Code": "EntryNotFound"})
                return
            data = path.read_bytes()
            headers = {
                "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                "X-Repo-Commit": COMMIT,
                "Accept-Ranges": "bytes",
            }
            wanted = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if wanted:
                start = int(wanted.group(1))
                end = int(wanted.group(2)) if wanted.group(2) else len(data) - 1
                part = data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
                self._send(206, headers, part)
                return
            self._send(200, headers, data)

        do_GET = _serve
        do_HEAD = _serve

    return Handler


@contextmanager
def fake_hub(files: Path | None = None) -> Iterator[FakeHub]:
    """Run a FakeHub serving ``files`` on 127.0.0.1 until the block ends."""
    hub = FakeHub(files=files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
