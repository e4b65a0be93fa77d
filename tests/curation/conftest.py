"""Fixtures of the curation tests: a real HTTP server on 127.0.0.1, generated videos, and tiny
random-weight models built locally (model-based stages).

``media_server`` serves files from a folder with byte ranges (as video hosts do) and can be told,
per path, to answer with an error status a number of times first, to stall longer than the
client's timeout, or to serve only the first bytes of a file (a truncated file). It counts the
requests per path so tests can assert how often a client retried.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from curation.engines.tiny import build_tiny_llm, build_tiny_vlm
from lagovad.video import write_video
from prevad import Store
from prevad.records import Segment, Video, make_id


@dataclass
class Behaviour:
    """How the server answers one path."""

    fail_status: int | None = None  # answer this status ...
    fail_times: int = 0  # ... this many times (then serve normally); -1 = always
    stall_s: float = 0.0  # sleep before answering
    truncate_to: int | None = None  # serve only this many bytes (and say so in Content-Length)
    content_type: str | None = None


@dataclass
class MediaServer:
    """A running server: its base URL, served folder, behaviours and request counts."""

    root: Path
    base: str
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)

    def url(self, name: str) -> str:
        """URL of a served file."""
        return f"{self.base}/{name}"


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TYPES = {".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
          ".html": "text/html", ".txt": "text/plain"}


def _handler(server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            name = self.path.split("?")[0].lstrip("/")
            server.hits[name] += 1
            b = server.behaviours.get(name, Behaviour())
            if b.stall_s:
                time.sleep(b.stall_s)
            if b.fail_status and (b.fail_times < 0 or server.hits[name] <= b.fail_times):
                self._status(b.fail_status)
                return
            path = server.root / name
            if not path.is_file():
                self._status(404)
                return
            data = path.read_bytes()
            if b.truncate_to is not None:
                data = data[: b.truncate_to]
            start, end, status = 0, len(data) - 1, 200
            m = _RANGE.fullmatch(self.headers.get("Range", "").strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else len(data) - 1
                else:
                    start = max(0, len(data) - int(m.group(2)))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end, status = min(end, len(data) - 1), 206
            chunk = data[start : end + 1]
            self.send_response(status)
            ctype = b.content_type or _TYPES.get(path.suffix, "application/octet-stream")
            self.send_header("Content-Type", ctype)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(chunk)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if body:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(chunk)

        def _status(self, code: int) -> None:
            msg = f"status {code}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)

    return Handler


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[MediaServer]:
    """A threaded HTTP server on 127.0.0.1 (random port) serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    srv = MediaServer(root, "")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()


def colour_frames(colours: list[tuple[int, int, int]], lengths: list[int], size=(64, 96),
                  moving: bool = True):
    """frame_fn for write_video: shots of solid-ish colours with a moving bar (real motion)."""
    bounds = np.cumsum(lengths)
    h, w = size

    def frame(i: int) -> np.ndarray:
        shot = int(np.searchsorted(bounds, i, side="right"))
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = colours[min(shot, len(colours) - 1)]
        if moving:
            x = (i * 3) % (w - 8)
            img[h // 3 : 2 * h // 3, x : x + 8] = 255 - np.array(colours[min(shot, len(colours)
                                                                              - 1)])
        return img

    return frame


@pytest.fixture(scope="session")
def small_mp4(tmp_path_factory) -> Path:
    """A 4 s, 25 fps, 96x64 H.264 mp4 (faststart, as served by video hosts)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return write_video(path, 100, colour_frames([(200, 40, 40), (40, 200, 40)], [50, 50]),
                       fps=25, lossless=False, faststart=True)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty store."""
    return Store.init(tmp_path / "store")



@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL model saved with its processor."""
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random text-only Qwen2 model saved with its tokenizer."""
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-qwen2")


def gray_video(path: Path, n_frames: int = 20, fps: int = 10, size: int = 32,
               base: int = 0) -> Path:
    """An H.264 video whose frame i is uniformly gray level base + 10 * i (lossless)."""
    return write_video(
        path, n_frames,
        lambda i: np.full((size, size, 3), min(255, base + 10 * i), np.uint8), fps=fps,
    )


@pytest.fixture()
def video_store(tmp_path: Path) -> Store:
    """A store with 3 videos (2 s each, one of them a corrupt file) and one segment per video.

    Video uris are relative to the store root, as acquisition stores them.
    """
    store = Store.init(tmp_path / "store")
    (store.root / "media").mkdir()
    videos, segments = [], []
    for k in range(3):
        name = f"media/v{k}.mp4"
        if k == 2:
            (store.root / name).write_bytes(b"not a video at all" * 10)
        else:
            gray_video(store.root / name, base=3 * k)
        v = Video.create("test", f"v{k}", uri=name, duration_s=2.0)
        videos.append(v)
        segments.append(Segment(make_id(v.video_id, 0.5, 1.5), v.video_id, "test", 0.5, 1.5,
                                method="scene"))
    store.append("videos", videos)
    store.append("segments", segments)
    return store
