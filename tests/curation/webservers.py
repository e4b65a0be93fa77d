"""Real HTTP servers on 127.0.0.1 for the media-stage tests (acquire, record, netpolicy).

:class:`WebServer` serves routes, each with its own behaviour: a file with or without byte ranges,
a redirect, an endless body, a slow drip, a stall, a required cookie, a live HLS playlist that
never ends. It records every request (path, headers, start time) and how many were in flight at
once. :class:`ConnectProxy` is an upstream HTTP proxy that only tunnels (``CONNECT``) and records
the targets it was asked for.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curation.ffmpeg import ffmpeg_path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TYPES = {".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
          ".html": "text/html", ".mpd": "application/dash+xml"}


@dataclass
class LiveHls:
    """A live playlist over ``segments`` (cycled forever), a window of ``window`` segments that
    advances with wall time, never an ``#EXT-X-ENDLIST``."""

    segments: list[Path]
    seconds: float = 1.0
    window: int = 3
    started: float = field(default_factory=time.monotonic)

    def playlist(self, prefix: str) -> bytes:
        seq = int((time.monotonic() - self.started) / self.seconds)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(self.seconds + 1)}",
                 f"#EXT-X-MEDIA-SEQUENCE:{seq}"]
        for n in range(seq, seq + self.window):
            lines += [f"#EXTINF:{self.seconds:.3f},", f"{prefix}seg{n}.ts"]
        return ("\n".join(lines) + "\n").encode()

    def segment(self, n: int) -> bytes:
        return self.segments[n % len(self.segments)].read_bytes()


@dataclass
class Route:
    """How one path is answered."""

    file: Path | None = None
    body: bytes | None = None
    content_type: str | None = None
    ranges: bool = True  # honour Range requests (else always 200 with the whole file)
    redirect: str | None = None  # answer 302 with this Location
    endless: bool = False  # an endless body without Content-Length
    drip_s: float = 0.0  # sleep between 1 KiB chunks
    stall_s: float = 0.0  # sleep before answering
    status: int | None = None
    need_cookie: str | None = None  # "name=value" the request must carry, else 403
    live: LiveHls | None = None
    segment_prefix: str = ""  # live playlists: prefix of segment URLs (another host)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    t: float


class WebServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with per-path :class:`Route` behaviours."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def add(self, path: str, route: Route) -> str:
        """Serve ``route`` at ``/path``; returns its URL."""
        self.routes[path] = route
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def hits(self, path: str | None = None) -> int:
        """Requests for ``path`` (all requests when None)."""
        return sum(1 for r in self.requests if path is None or r.path == path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            name = self.path.split("?")[0].lstrip("/")
            with server._lock:
                server.requests.append(Request(name, dict(self.headers.items()),
                                               time.monotonic()))
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                    self._answer(name, body)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _answer(self, name: str, body: bool) -> None:
            route = server.routes.get(name)
            live = next((r.live for r in server.routes.values() if r.live), None)
            if route is None and live and name.rsplit("/", 1)[-1].startswith("seg"):
                n = int(re.sub(r"\D", "", name.rsplit("/", 1)[-1]) or 0)
                return self._send(200, live.segment(n), "video/mp2t", body)
            if route is None:
                return self._send(404, b"not found\n", "text/plain", body)
            if route.stall_s:
                time.sleep(route.stall_s)
            if route.need_cookie and route.need_cookie not in self.headers.get("Cookie", ""):
                return self._send(403, b"login required\n", "text/plain", body)
            if route.status:
                return self._send(route.status, f"status {route.status}\n".encode(),
                                  "text/plain", body)
            if route.redirect:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if route.live:
                return self._send(200, route.live.playlist(route.segment_prefix),
                                  "application/vnd.apple.mpegurl", body)
            ctype = route.content_type or _TYPES.get(
                Path(route.file.name if route.file else name).suffix, "application/octet-stream")
            if route.endless:
                return self._endless(ctype, route.drip_s, body)
            data = route.body if route.body is not None else route.file.read_bytes()
            start, end, status = 0, len(data) - 1, 200
            m = _RANGE.fullmatch(self.headers.get("Range", "").strip())
            if route.ranges and m and m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), end) if m.group(2) else end
                status = 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
            chunk = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if route.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(chunk)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if body:
                if route.drip_s:
                    for i in range(0, len(chunk), 1024):
                        self.wfile.write(chunk[i : i + 1024])
                        self.wfile.flush()
                        time.sleep(route.drip_s)
                else:
                    self.wfile.write(chunk)
            return None

        def _endless(self, ctype: str, drip_s: float, body: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Connection", "close")
            self.end_headers()
            block = b"\x00\x00\x00\x18ftypisom" + bytes(64 * 1024 - 12)
            while body:
                self.wfile.write(block[:1024] if drip_s else block)
                self.wfile.flush()
                if drip_s:
                    time.sleep(drip_s)

        def _send(self, status: int, data: bytes, ctype: str, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


class ConnectProxy:
    """An upstream HTTP proxy on 127.0.0.1 that only tunnels (CONNECT) and records targets."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target = head.split(b" ", 2)[:2]
            if method != b"CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target.decode())
            host, _, port = target.decode().rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port))) as up:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                socks = [conn, up]
                while True:
                    ready, _, _ = select.select(socks, [], [], 10)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        (up if s is conn else conn).sendall(data)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def web() -> Iterator[WebServer]:
    """A :class:`WebServer` (closed after the test)."""
    srv = WebServer()
    yield srv
    srv.close()


@pytest.fixture
def other_web() -> Iterator[WebServer]:
    """A second server: another "host" (another port) that the policy does not allow."""
    srv = WebServer()
    yield srv
    srv.close()


def hls_segments(src: Path, folder: Path, seconds: float = 1.0) -> Path:
    """Segment ``src`` into ``folder/index.m3u8`` + ``.ts`` files (a VOD playlist)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ffmpeg_path()), "-hide_banner", "-loglevel", "error", "-i", str(src),
                    "-c", "copy", "-f", "hls", "-hls_time", str(seconds), "-hls_list_size", "0",
                    "-hls_segment_filename", str(folder / "seg%d.ts"),
                    str(folder / "index.m3u8")], check=True, timeout=60)
    return folder / "index.m3u8"


def finishes(fn, within: float = 90.0):  # noqa: ANN001, ANN201 - test helper
    """Run ``fn()`` in a thread; fail the test (instead of hanging it) when it does not return
    within ``within`` seconds — a guard against hangs, far above the bounds under test."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    if t.is_alive():
        pytest.fail(f"did not finish within {within} s (hang)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def write_vfr(path: Path) -> Path:
    """A variable-frame-rate H.264 mp4 of exactly 4.0 s: 2 s at 30 fps, then 2 s at 10 fps
    (80 frames), timestamps in milliseconds."""
    import fractions

    import av
    import numpy as np

    deltas = [33, 33, 34] * 20 + [100] * 20  # 2000 ms + 2000 ms
    ms = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.codec_context.time_base = ms
        t = 0
        for i, d in enumerate(deltas):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), (i * 7) % 255, np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = t, ms
            t += d
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def vfr_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4.0 s variable-frame-rate mp4 (80 frames: 60 at 30 fps, then 20 at 10 fps)."""
    return write_vfr(tmp_path_factory.mktemp("vfr") / "vfr.mp4")


def make_tls(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) from a fresh test authority that signed a certificate
    for ``localhost``/127.0.0.1 (made with the openssl command line)."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca, key, csr, crt = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr",
                                                      "srv.pem"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", "/CN=prevad test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj",
        "/CN=localhost")
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(crt), str(key))
    client = ssl.create_default_context(cafile=str(ca))
    return server, client
