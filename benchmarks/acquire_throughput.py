"""Videos/s of the ``acquire`` stage against a plain concurrent HTTP download loop, same files,
same run.

A local server on 127.0.0.1 serves ``--videos`` small H.264 files (``--distinct`` different ones
under as many names). Three runs over the same URLs, each into a fresh folder:

1. **plain loop** — ``urllib.request`` in a thread pool of ``--concurrency`` workers, each body
   written to a file: the floor any downloader pays;
2. **acquire** — the real stage (:func:`curation.acquire.acquire`: work list, policy checks,
   bounded download, probe, store commit per shard) with the same concurrency;
3. optionally (``--ytdlp-cli``) the ``yt-dlp`` command line over the same URL list.

The server can behave like a remote host (``--latency-ms`` before each answer,
``--bandwidth`` bytes/s per connection): then both loops wait on the network, as they would for
real; without them the loopback makes the comparison CPU-bound (it measures our per-item
overhead). Ratios are computed within one run, so the machine's load affects both sides::

    python benchmarks/acquire_throughput.py --videos 200 --concurrency 8
    python benchmarks/acquire_throughput.py --videos 200 --concurrency 8 --latency-ms 50 \\
        --bandwidth 2000000
    python benchmarks/acquire_throughput.py --videos 100 --repo /work/main   # another checkout

``--repo`` imports ``curation``/``prevad`` from another checkout (e.g. before a change); options
it does not know are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=200, help="URLs (files) to download")
    p.add_argument("--distinct", type=int, default=8, help="different videos behind them")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    p.add_argument("--size", default="320x240", help="WxH of the videos")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--latency-ms", type=float, default=0.0, help="server delay per request")
    p.add_argument("--bandwidth", type=float, default=0.0,
                   help="server bytes/s per connection (0 = as fast as loopback)")
    p.add_argument("--ytdlp-cli", action="store_true", help="also time the yt-dlp CLI")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                   help="checkout whose curation/prevad to benchmark")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args()
    for name in ("videos", "distinct", "concurrency"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    if not a.seconds > 0 or a.latency_ms < 0 or a.bandwidth < 0:
        p.error("--seconds must be > 0; --latency-ms and --bandwidth must be >= 0")
    return a


def make_videos(folder: Path, n: int, seconds: float, size: str) -> list[Path]:
    """``n`` distinct small H.264 mp4 files (moving noise, faststart, 25 fps)."""
    from lagovad.video import write_video

    w, h = (int(x) for x in size.split("x"))
    out = []
    for k in range(n):
        rng = np.random.default_rng(k)
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        out.append(write_video(folder / f"src{k}.mp4", int(seconds * 25),
                               lambda i, b=base: np.roll(b, 4 * i, axis=1), fps=25,
                               lossless=False, faststart=True))
    return out


def serve(files: dict[str, bytes], latency_s: float, bandwidth: float) -> ThreadingHTTPServer:
    """A threaded server of ``files`` (path -> bytes) on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = files.get(self.path.lstrip("/"))
            if latency_s:
                time.sleep(latency_s)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not bandwidth:
                self.wfile.write(data)
                return
            step = max(1, int(bandwidth / 50))  # 20 ms worth per write
            t0 = time.monotonic()
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                ahead = (i + step) / bandwidth - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # clients that hang up early (yt-dlp's probe request) are not errors

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.request_queue_size = 256
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return httpd


def plain_loop(urls: list[str], out: Path, concurrency: int) -> float:
    """Seconds to download every URL into ``out`` with urllib in a thread pool."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(i_url: tuple[int, str]) -> None:
        i, url = i_url
        with opener.open(url, timeout=60) as r, open(out / f"{i}.mp4", "wb") as f:
            shutil.copyfileobj(r, f, 256 * 1024)

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(get, enumerate(urls)))
    return time.perf_counter() - t


def run_acquire(urls: list[str], root: Path, concurrency: int) -> tuple[float, float, dict]:
    """(wall s, CPU s of this process, summary) of the acquire stage over ``urls``."""
    from curation import acquire as acq
    from prevad import Store
    from prevad.records import SourceCandidate, make_id

    store = Store.init(root)
    store.append("candidates", [SourceCandidate(make_id("bench", u), "bench", f"v{i}", url=u)
                                for i, u in enumerate(urls)])
    names = {f.name for f in dataclasses.fields(acq.AcquireSettings)}
    wanted = {"concurrency": concurrency, "allow_private_network": True, "retries": 0,
              "backoff_s": 0.0}
    settings = acq.AcquireSettings(**{k: v for k, v in wanted.items() if k in names})
    cpu, t = time.process_time(), time.perf_counter()
    summary = acq.acquire(store, settings)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return wall, cpu, summary.to_dict()


def ytdlp_cli(urls: list[str], out: Path) -> float:
    """Seconds the yt-dlp command line takes over the URL list (one process)."""
    listing = out / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "yt_dlp", "-q", "--no-warnings", "-a", str(listing),
                    "-o", str(out / "%(id)s.%(ext)s"), "--no-playlist", "--proxy", ""],
                   check=True, timeout=3600)
    return time.perf_counter() - t


def main() -> None:
    a = _args()
    sys.path.insert(0, str(a.repo.resolve()))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="acquire-bench-") as tmp:
        tmp_path = Path(tmp)
        sources = make_videos(tmp_path, a.distinct, a.seconds, a.size)
        blobs = [p.read_bytes() for p in sources]
        files = {f"v{i}.mp4": blobs[i % len(blobs)] for i in range(a.videos)}
        httpd = serve(files, a.latency_ms / 1000, a.bandwidth)
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        urls = [f"{base}/v{i}.mp4" for i in range(a.videos)]
        mb = sum(len(files[f"v{i}.mp4"]) for i in range(a.videos)) / 1e6
        (tmp_path / "plain").mkdir()
        plain_s = plain_loop(urls, tmp_path / "plain", a.concurrency)
        acq_s, acq_cpu, summary = run_acquire(urls, tmp_path / "store", a.concurrency)
        res = {"videos": a.videos, "mb": round(mb, 2), "concurrency": a.concurrency,
               "latency_ms": a.latency_ms, "bandwidth": a.bandwidth, "repo": str(a.repo),
               "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0],
               "plain_loop_videos_per_s": a.videos / plain_s,
               "acquire_videos_per_s": a.videos / acq_s,
               "acquire_cpu_ms_per_video": 1000 * acq_cpu / a.videos,
               "ratio_vs_plain_loop": plain_s / acq_s, "acquire_summary": summary}
        if a.ytdlp_cli:
            (tmp_path / "cli").mkdir()
            cli_s = ytdlp_cli(urls, tmp_path / "cli")
            res["ytdlp_cli_videos_per_s"] = a.videos / cli_s
            res["ratio_vs_ytdlp_cli"] = cli_s / acq_s
        httpd.shutdown()
    print(f"{a.videos} videos ({res['mb']} MB), concurrency {a.concurrency}, latency "
          f"{a.latency_ms:g} ms, bandwidth {a.bandwidth or 'unlimited'} B/s per connection, "
          f"load {res['load_1m']:.1f} on {res['cpus']} CPUs")
    print("| run | videos/s | ratio acquire/run |")
    print("|---|---|---|")
    print(f"| plain urllib loop | {res['plain_loop_videos_per_s']:.1f} | "
          f"{res['ratio_vs_plain_loop']:.2f}x |")
    if a.ytdlp_cli:
        print(f"| yt-dlp CLI | {res['ytdlp_cli_videos_per_s']:.1f} | "
              f"{res['ratio_vs_ytdlp_cli']:.2f}x |")
    print(f"| acquire | {res['acquire_videos_per_s']:.1f} | — |")
    print(f"acquire: {res['acquire_cpu_ms_per_video']:.1f} ms CPU per video; ok "
          f"{summary['ok']}, rejected {summary['rejected']}, failed {summary['failed']}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
