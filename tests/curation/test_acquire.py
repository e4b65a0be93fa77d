"""Acquisition with yt-dlp against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil

import pytest

from curation.acquire import AcquireSettings, acquire, classify
from curation.common import probe_video
from prevad.records import SourceCandidate, make_id, video_id_for

FAST = dict(retries=2, backoff_s=0.0, socket_timeout_s=2.0, allow_private_network=True)


def _cand(store, url, svid, start=None, end=None, source="web"):
    meta = {"start_s": start, "end_s": end}
    c = SourceCandidate(make_id("test", svid, start, end), source, svid, url=url,
                        metadata_json=json.dumps(meta))
    store.append("candidates", [c])
    return c


def _latest(store, cand):
    rows = [r for r in store.records("stage_results") if r.id == cand.candidate_id]
    return max(rows, key=lambda r: (r.time, r.attempt)), len(rows)


def test_download_whole_file_probes_metadata_into_videos(store, media_server, small_mp4):
    shutil.copy(small_mp4, media_server.root / "a.mp4")
    cand = _cand(store, media_server.url("a.mp4"), "a")
    summary = acquire(store, AcquireSettings(**FAST))
    assert (summary.ok, summary.failed, summary.rejected) == (1, 0, {})
    [video] = store.records("videos")
    assert video.video_id == video_id_for("web", "a")
    assert video.uri == f"videos/web/{video.video_id}.mp4"
    assert (video.n_frames, video.width, video.height, video.fps) == (100, 96, 64, 25.0)
    assert video.duration_s == pytest.approx(4.0)
    assert probe_video(store.root / video.uri).n_frames == 100
    res, _ = _latest(store, cand)
    assert res.output["codec"] == "h264"
    # idempotent: a rerun has nothing to do and writes no second row
    again = acquire(store, AcquireSettings(**FAST))
    assert again.items == 0 and store.read("videos").num_rows == 1


def test_section_download_keeps_only_the_span(store, media_server, small_mp4):
    shutil.copy(small_mp4, media_server.root / "a.mp4")
    _cand(store, media_server.url("a.mp4"), "a", 1.0, 3.0)
    summary = acquire(store, AcquireSettings(**FAST))
    assert summary.ok == 1
    [video] = store.records("videos")
    assert (video.start_s, video.end_s) == (1.0, 3.0)
    assert video.video_id == video_id_for("web", "a", 1.0, 3.0)
    assert video.duration_s == pytest.approx(2.0, abs=0.1)
    assert abs(video.n_frames - 50) <= 2


def test_404_is_rejected_at_once_and_never_retried(store, media_server):
    cand = _cand(store, media_server.url("missing.mp4"), "m")
    summary = acquire(store, AcquireSettings(**FAST))
    assert summary.rejected == {"http_404": 1} and summary.failed == 0
    assert media_server.hits["missing.mp4"] == 1
    res, n = _latest(store, cand)
    assert res.status == "rejected" and "404" in res.output["error"]
    assert acquire(store, AcquireSettings(**FAST)).items == 0  # rejected: not on the work list
    assert media_server.hits["missing.mp4"] == 1 and n == 1


def test_500_then_success_is_retried(store, media_server, small_mp4):
    from tests.curation.conftest import Behaviour

    shutil.copy(small_mp4, media_server.root / "flaky.mp4")
    media_server.behaviours["flaky.mp4"] = Behaviour(fail_status=503, fail_times=1)
    cand = _cand(store, media_server.url("flaky.mp4"), "f")
    summary = acquire(store, AcquireSettings(**FAST))
    assert summary.ok == 1
    res, _ = _latest(store, cand)
    assert res.output["attempts"] == 2
    assert store.records("videos")[0].n_frames == 100


def test_persistent_5xx_fails_with_the_original_error_and_is_retried_next_run(
        store, media_server, small_mp4):
    from tests.curation.conftest import Behaviour

    shutil.copy(small_mp4, media_server.root / "down.mp4")
    media_server.behaviours["down.mp4"] = Behaviour(fail_status=500, fail_times=-1)
    cand = _cand(store, media_server.url("down.mp4"), "d")
    summary = acquire(store, AcquireSettings(retries=1, backoff_s=0.0, allow_private_network=True))
    assert summary.failed == 1
    res, _ = _latest(store, cand)
    assert res.status == "failed" and "HTTP Error 500" in res.error
    assert media_server.hits["down.mp4"] == 2  # first try + 1 retry
    media_server.behaviours.clear()
    # failed items come back (same settings, same version: attempt 2)
    assert acquire(store, AcquireSettings(retries=1, backoff_s=0.0,
                                          allow_private_network=True)).ok == 1
    res, n = _latest(store, cand)
    assert (res.status, res.attempt, n) == ("ok", 2, 2)


def test_timeout_is_transient_and_fails_after_retries(store, media_server, small_mp4):
    from tests.curation.conftest import Behaviour

    shutil.copy(small_mp4, media_server.root / "slow.mp4")
    media_server.behaviours["slow.mp4"] = Behaviour(stall_s=2.0)
    cand = _cand(store, media_server.url("slow.mp4"), "s")
    summary = acquire(store, AcquireSettings(retries=1, backoff_s=0.0, socket_timeout_s=0.5, allow_private_network=True))
    assert summary.failed == 1
    res, _ = _latest(store, cand)
    assert res.error.startswith("timeout after 2 attempts") and "timed out" in res.error
    assert store.read("videos").num_rows == 0


@pytest.mark.parametrize("faststart, message", [
    (False, "not a readable video"),  # index at the end: the cut file has no moov atom
    (True, "truncated: frame"),  # index first: the last frame read is cut short
])
def test_truncated_download_fails_with_the_reason(store, media_server, tmp_path, faststart,
                                                  message):
    from lagovad.video import write_video
    from tests.curation.conftest import Behaviour, colour_frames

    src = write_video(tmp_path / "t.mp4", 100, colour_frames([(10, 10, 200)], [100]),
                      lossless=False, faststart=faststart)
    shutil.copy(src, media_server.root / "trunc.mp4")
    media_server.behaviours["trunc.mp4"] = Behaviour(truncate_to=src.stat().st_size * 6 // 10)
    cand = _cand(store, media_server.url("trunc.mp4"), "t")
    summary = acquire(store, AcquireSettings(**FAST))
    assert summary.failed == 1
    res, _ = _latest(store, cand)
    assert res.error.startswith("bad download:") and message in res.error
    assert store.read("videos").num_rows == 0
    assert not list((store.root / "videos").rglob("*.mp4"))


def test_non_video_download_fails_and_does_not_stop_other_items(store, media_server, small_mp4):
    from tests.curation.conftest import Behaviour

    (media_server.root / "fake.mp4").write_text("this is not a video\n" * 50)
    media_server.behaviours["fake.mp4"] = Behaviour(content_type="video/mp4")
    shutil.copy(small_mp4, media_server.root / "good.mp4")
    bad = _cand(store, media_server.url("fake.mp4"), "x")
    _cand(store, media_server.url("good.mp4"), "g")
    summary = acquire(store, AcquireSettings(**FAST))
    assert (summary.ok, summary.failed) == (1, 1)
    res, _ = _latest(store, bad)
    assert "bad download" in res.error


def test_disallowed_schemes_are_rejected_and_file_urls_need_opt_in(store, small_mp4):
    ftp = _cand(store, "ftp://example.org/a.mp4", "ftp")
    local = _cand(store, small_mp4.as_uri(), "local")
    summary = acquire(store, AcquireSettings(**FAST))
    assert summary.rejected == {"scheme_not_allowed": 2}
    res, _ = _latest(store, ftp)
    assert "scheme 'ftp'" in res.output["error"] and "is not allowed" in res.output["error"]
    assert store.read("videos").num_rows == 0
    # file: only when enabled; that is a new stage version, so the rejected items run again
    enabled = acquire(store, AcquireSettings(allow_file=True, **FAST))
    assert (enabled.ok, enabled.rejected) == (1, {"scheme_not_allowed": 1})
    res, _ = _latest(store, local)
    assert res.status == "ok" and store.records("videos")[0].n_frames == 100


def test_classify_transient_and_permanent():
    from yt_dlp.utils import DownloadError

    assert classify(DownloadError("ERROR: Unable to download: HTTP Error 404: Not Found")) == (
        "permanent", "http_404")
    assert classify(DownloadError("ERROR: HTTP Error 503: Service Unavailable"))[0] == "transient"
    assert classify(DownloadError("ERROR: Unsupported URL: http://x")) == (
        "permanent", "unsupported_url")
    assert classify(TimeoutError("read timed out")) == ("transient", "timeout")
    assert classify(ConnectionResetError("Connection reset by peer"))[0] == "transient"
