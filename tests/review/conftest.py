"""A real Label Studio server for the review round-trip tests (one per test session).

Label Studio lives in its own virtualenv (its pins clash with ours), installed by
``scripts/setup_label_studio.sh``; Playwright drives Debian's chromium. Nothing is mocked: the
tests talk to the server over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from lagovad.video import write_video
from prevad.records import Segment, StageResult, Video, make_id
from prevad.store import Store

LS_VENV = Path(
    os.environ.get("LABEL_STUDIO_VENV", Path.home() / ".cache" / "lagovad" / "label-studio-venv")
)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
START_TIMEOUT_S = 300
JUDGE_VERSION = "v1-judge0test01"
FPS, N_FRAMES = 25, 50


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: URL, the admin's login, a personal access token, media root."""

    url: str
    email: str
    password: str
    token: str
    document_root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _personal_access_token(url: str, email: str, password: str) -> str:
    """Log in as a person would, then create a personal access token (a JWT refresh token)."""
    http = requests.Session()
    http.get(f"{url}/user/login/", timeout=30)
    r = http.post(
        f"{url}/user/login/",
        data={"email": email, "password": password,
              "csrfmiddlewaretoken": http.cookies.get("csrftoken")},
        headers={"Referer": f"{url}/user/login/"}, allow_redirects=False, timeout=30,
    )
    assert r.status_code == 302, f"login failed: HTTP {r.status_code}"
    r = http.post(
        f"{url}/api/token/",
        headers={"X-CSRFToken": http.cookies.get("csrftoken"), "Referer": f"{url}/"}, timeout=30,
    )
    assert r.status_code == 201, f"token creation failed: HTTP {r.status_code} {r.text[:200]}"
    return r.json()["token"]


def _ls_version() -> str:
    markers = sorted(LS_VENV.glob(".ls-*"))  # written by scripts/setup_label_studio.sh
    return markers[-1].name.removeprefix(".ls-") if markers else "unknown"


def migrated_template(exe: Path) -> Path:
    """A data dir with Label Studio's database already migrated (cached beside its venv).

    Django's migrations are most of a fresh start (~2-3 min on 2 busy cores; a start from a
    migrated copy takes ~20 s). ``label-studio version`` migrates and exits; the setup script
    builds the same folder, so a test session usually only copies it.
    """
    template = LS_VENV.parent / f"label-studio-test-db-{_ls_version()}"
    if not (template / "label_studio.sqlite3").is_file():
        tmp = template.with_name(f"{template.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([str(exe), "version"], env={**os.environ,
                       "LABEL_STUDIO_BASE_DATA_DIR": str(tmp)}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        shutil.rmtree(template, ignore_errors=True)
        os.replace(tmp, template)
    return template


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """Start ``label-studio start`` on a free port of 127.0.0.1 with a temp data dir."""
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.fail(
            f"Label Studio is not installed at {LS_VENV}: run scripts/setup_label_studio.sh"
        )
    base = tmp_path_factory.mktemp("label-studio")
    data, media = base / "data", base / "media"
    shutil.copytree(migrated_template(exe), data)
    media.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    email, password = "annotator@example.com", secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(media),
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    }
    log = base / "label-studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
             "--username", email, "--password", password],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"label-studio exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{url}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio not up after {START_TIMEOUT_S} s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(1)
        token = _personal_access_token(url, email, password)
        yield LabelStudioServer(url, email, password, token, media, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_review_store(root: Path, videos: list[dict]) -> tuple[Store, list[Video]]:
    """A store with generated videos (write_video) and their judge-stage results.

    Each item of ``videos``: ``category``, ``split`` and optionally ``spans`` (judge output).
    The judge rows are stored data in the judge stage's output format, written directly.
    """
    store = Store.init(root)
    vids, results = [], []
    for i, spec in enumerate(videos):
        path = root / "videos" / f"clip{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, N_FRAMES,
                    lambda k, i=i: np.full((64, 64, 3), (40 * i + 4 * k) % 256, np.uint8), fps=FPS)
        v = Video.create("generated", f"clip{i}", uri=f"videos/clip{i}.mp4", fps=float(FPS),
                         n_frames=N_FRAMES, duration_s=N_FRAMES / FPS, width=64, height=64)
        vids.append(v)
        out = {
            "video_id": v.video_id, "segment_id": None,
            "anomaly": spec["category"] != "Normal", "category": spec["category"],
            "top_level": spec["category"], "confidence": spec.get("confidence", 0.8),
            "reason": f"the judge saw {spec['category']}", "split": spec["split"],
        }
        if "spans" in spec:
            out["spans"] = spec["spans"]
        results.append(StageResult(v.video_id, "judge", JUDGE_VERSION, "ok",
                                   output_json=json.dumps(out)))
    store.append("videos", vids)
    store.append("stage_results", results)
    return store, vids


# ----------------------------------------------------------------------------- clip fixtures
#: Bars video: frame i shows i in binary as 7 white/black vertical bars (16 px each); frames
#: inside a "red" interval get a red top band. Decoding a frame tells which source frame it is.
BARS, BAR_W, BARS_H = 7, 16, 48


def bars_image(i: int, red: bool = False) -> np.ndarray:
    """Frame ``i`` of a bars video (uint8 RGB, 112x48)."""
    a = np.zeros((BARS_H, BARS * BAR_W, 3), np.uint8)
    for b in range(BARS):
        if (i >> b) & 1:
            a[16:, b * BAR_W:(b + 1) * BAR_W] = 255
    if red:
        a[:12, :] = (255, 0, 0)
    return a


def read_bars(rgb: np.ndarray) -> tuple[int, bool]:
    """(source frame index, red band) of a decoded bars frame."""
    idx = sum(1 << b for b in range(BARS)
              if rgb[20:, b * BAR_W + 4:(b + 1) * BAR_W - 4].mean() > 128)
    top = rgb[:10].reshape(-1, 3).mean(axis=0)
    return idx, bool(top[0] > 128 and top[1] < 100)


def write_bars_video(path: Path, times: list[float],
                     red: tuple[float, float] | None = None) -> Path:
    """An H.264 mp4 whose frame i has timestamp ``times[i]`` (seconds; uneven = VFR)."""
    import fractions

    import av

    tb = fractions.Fraction(1, 1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=1000, options={"qp": "0"})
        s.width, s.height, s.pix_fmt = BARS * BAR_W, BARS_H, "yuv420p"
        s.codec_context.time_base = tb
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(
                bars_image(i, red is not None and red[0] <= t < red[1]), format="rgb24")
            f.pts, f.time_base = round(t * 1000), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode_bars(path: Path) -> list[tuple[float, int, bool]]:
    """(time, source frame index, red) of every frame of a bars video or of media cut from it."""
    import av

    with av.open(str(path)) as c:
        return [(float(f.pts * f.time_base), *read_bars(f.to_ndarray(format="rgb24")))
                for f in c.decode(video=0)]


#: The VFR parent of the clip tests: 5 fps for 4 s (frames 0..19), then 25 fps for 2 s (20..69).
VFR_TIMES = [0.2 * i for i in range(20)] + [4.0 + 0.04 * i for i in range(50)]


def make_clip_store(root: Path, times: list[float], clips: list[dict],
                    red: tuple[float, float] | None = None, version: str = JUDGE_VERSION,
                    ) -> tuple[Store, Video, list[Segment]]:
    """A store with one bars video split into clips (``segments`` rows) and a judge result per
    clip. Each item of ``clips``: ``start``, ``end``, ``category``, ``split``."""
    store = Store.init(root)
    write_bars_video(root / "videos" / "parent.mp4", times, red)
    duration = times[-1] + (times[-1] - times[-2])
    v = Video.create("generated", "parent", uri="videos/parent.mp4", duration_s=duration,
                     fps=len(times) / duration, n_frames=len(times),
                     width=BARS * BAR_W, height=BARS_H)
    segs, results = [], []
    for c in clips:
        seg = Segment(make_id("segment", v.video_id, c["start"], c["end"], "test"), v.video_id,
                      "generated", c["start"], c["end"], method="test")
        segs.append(seg)
        out = {"video_id": v.video_id, "segment_id": seg.segment_id,
               "anomaly": c["category"] != "Normal", "category": c["category"],
               "top_level": c["category"], "confidence": 0.7,
               "reason": f"the judge saw {c['category']}", "split": c["split"]}
        results.append(StageResult(seg.segment_id, "judge", version, "ok",
                                   output_json=json.dumps(out)))
    store.append("videos", [v])
    store.append("segments", segs)
    store.append("stage_results", results)
    return store, v, segs
