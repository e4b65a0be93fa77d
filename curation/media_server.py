"""A static file server on 127.0.0.1, with and without byte ranges (what video hosts do).

Used by the demo, the benchmark and the tests to serve videos and HLS streams to the acquire and
record stages, so they run their real network code without the internet:

- ``/<path>`` serves ``root/<path>`` with byte ranges (``Accept-Ranges: bytes``, 206 answers);
- ``/norange/<path>`` serves the same file as a server without byte ranges does: no
  ``Accept-Ranges``, every request answered 200 with the whole body (a ``Range`` header is
  ignored, as RFC 9110 allows).

Files are sent in chunks. A client that closes the connection early (a probe that reads the
first bytes, a download cut short) ends that response silently: no traceback on stderr.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_TYPES = {".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
          ".csv": "text/csv", ".json": "application/json"}
#: URL prefix of the files served without byte ranges.
NO_RANGE_PREFIX = "norange"
_CHUNK = 1 << 16
#: What a client that goes away mid-answer raises in the handler.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 root: Path) -> None:
        super().__init__(address, handler)
        self.root = root
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is not an error of the server; anything else is reported."""
        import sys

        if isinstance(sys.exc_info()[1], _GONE):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # callers print their own progress
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._serve(body=True)

    def _count(self, key: str) -> None:
        with self.server.lock:
            self.server.stats[key] += 1

    def _resolve(self) -> tuple[Path | None, bool]:
        """(file or None, ranges on) of the request path."""
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        ranges = True
        head, _, rest = rel.partition("/")
        if head == NO_RANGE_PREFIX:
            rel, ranges = rest, False
        root = self.server.root
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            return None, ranges
        return path, ranges

    def _serve(self, body: bool) -> None:
        try:
            self._answer(body)
        except _GONE:
            self.close_connection = True  # the client went away: nothing to say to it

    def _answer(self, body: bool) -> None:
        path, ranges = self._resolve()
        if path is None:
            self._count("404")
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        m = _RANGE.match(self.headers.get("Range", "")) if ranges else None
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            if start > end or start >= size:
                self._count("416")
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self._count("206" if status == 206 else "200")
        self.send_response(status)
        self.send_header("Content-Type", _TYPES.get(path.suffix, "application/octet-stream"))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with path.open("rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


class MediaServer:
    """Serve ``root`` on 127.0.0.1 (a free port) from a daemon thread; use as a context manager.

    Attributes:
        root: the served folder.
        base_url: ``http://127.0.0.1:<port>``.
        stats: answers given so far by status (``"200"``, ``"206"``, ``"404"``, ``"416"``).
    """

    def __init__(self, root: str | Path, port: int = 0) -> None:
        self.root = Path(root).resolve()
        self._httpd = _Server(("127.0.0.1", port), _Handler, self.root)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def stats(self) -> Counter[str]:
        """Answers given so far, by status code."""
        return self._httpd.stats

    def url(self, relative: str, ranges: bool = True) -> str:
        """The URL of a file under :attr:`root` (``ranges=False``: from the no-range prefix)."""
        prefix = "" if ranges else f"/{NO_RANGE_PREFIX}"
        return f"{self.base_url}{prefix}/{relative.lstrip('/')}"

    def start(self) -> MediaServer:
        """Start serving (what ``with`` does)."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
