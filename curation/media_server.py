"""A static file server on 127.0.0.1 with byte ranges (what video hosts and yt-dlp expect).

Used by the demo to serve sample videos and an HLS stream to the acquire and record stages, so
they run their real network code without the internet.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_TYPES = {".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}


def _handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # the demo prints its own progress
            pass

        def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = (root / self.path.split("?", 1)[0].lstrip("/")).resolve()
            if root not in path.parents or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start, end, status = 0, len(data) - 1, 200
            m = _RANGE.match(self.headers.get("Range", ""))
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), end) if m.group(2) else end
                else:  # suffix range: the last N bytes
                    start = max(0, len(data) - int(m.group(2)))
                if start > end:
                    self.send_error(416)
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", _TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if body:
                self.wfile.write(data[start:end + 1])

    return Handler


class MediaServer:
    """Serve ``root`` on 127.0.0.1 (a free port) from a daemon thread; use as a context manager.

    Attributes:
        root: the served folder.
        base_url: ``http://127.0.0.1:<port>``.
    """

    def __init__(self, root: str | Path, port: int = 0) -> None:
        self.root = Path(root).resolve()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.root))
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, relative: str) -> str:
        """The URL of a file under :attr:`root`."""
        return f"{self.base_url}/{relative.lstrip('/')}"

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
