"""Recording an HLS stream that ffmpeg writes and the test server serves."""

from __future__ import annotations

import subprocess

import pytest

from curation.acquire import AcquireSettings, acquire
from curation.ffmpeg import ffmpeg_path
from curation.record import RecordSettings, add_streams, record, stream_candidate
from prevad.errors import PrevadError
from prevad.records import SourceCandidate


def _hls(src, folder):
    """Segment ``src`` into an HLS playlist (1 s segments) the way a live packager does."""
    folder.mkdir()
    subprocess.run([str(ffmpeg_path()), "-hide_banner", "-loglevel", "error", "-i", str(src),
                    "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    str(folder / "index.m3u8")], check=True, timeout=60)
    return folder / "index.m3u8"


def _status(store, cand_id):
    rows = [r for r in store.records("stage_results") if r.id == cand_id]
    return max(rows, key=lambda r: (r.time, r.attempt))


def test_records_a_set_duration_of_an_hls_stream(store, media_server, small_mp4):
    _hls(small_mp4, media_server.root / "live")
    [cand] = add_streams(store, [media_server.url("live/index.m3u8")], 2.0)
    summary = record(store, RecordSettings(socket_timeout_s=5, allow_private_network=True))
    assert (summary.ok, summary.failed) == (1, 0)
    [video] = store.records("videos")
    assert video.source == "stream" and (video.start_s, video.end_s) == (0.0, 2.0)
    assert video.duration_s == pytest.approx(2.0, abs=0.1)
    assert abs(video.n_frames - 50) <= 2 and (video.width, video.height) == (96, 64)
    assert (store.root / video.uri).is_file() and video.uri.startswith("videos/stream/")
    assert any(k.endswith(".ts") for k in media_server.hits)  # segments really came over HTTP
    out = _status(store, cand.candidate_id).output
    assert out["short"] is False and out["codec"] == "h264"
    # rerun: nothing to do, nothing duplicated; registering the stream again adds nothing
    add_streams(store, [media_server.url("live/index.m3u8")], 2.0)
    assert record(store, RecordSettings(socket_timeout_s=5, allow_private_network=True)).items == 0
    assert store.read("videos").num_rows == 1 and store.read("candidates").num_rows == 1


def test_zero_length_stream_fails_with_reason_and_others_still_record(
        store, media_server, small_mp4):
    _hls(small_mp4, media_server.root / "live")
    (media_server.root / "empty.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-ENDLIST\n")
    [empty] = add_streams(store, [media_server.url("empty.m3u8")], 2.0)
    add_streams(store, [media_server.url("live/index.m3u8")], 1.0)
    summary = record(store, RecordSettings(socket_timeout_s=5, allow_private_network=True))
    assert (summary.ok, summary.failed) == (1, 1)
    res = _status(store, empty.candidate_id)
    assert res.status == "failed" and res.error.startswith("zero-length stream")
    assert store.read("videos").num_rows == 1


def test_streams_and_downloads_stay_in_their_own_stage(store, media_server, small_mp4):
    _hls(small_mp4, media_server.root / "live")
    add_streams(store, [media_server.url("live/index.m3u8")], 1.0)
    store.append("candidates", [SourceCandidate("c1", "web", "v1", url="ftp://x/y.mp4")])
    rec = record(store, RecordSettings(socket_timeout_s=5, allow_private_network=True))
    assert rec.ok == 1 and rec.rejected == {"not_a_stream": 1}
    acq = acquire(store, AcquireSettings(retries=0, backoff_s=0, allow_private_network=True))
    assert acq.rejected == {"stream": 1, "scheme_not_allowed": 1}


def test_bad_stream_arguments_are_clear_errors():
    with pytest.raises(PrevadError, match="duration must be > 0"):
        stream_candidate("http://127.0.0.1/x.m3u8", 0)
    with pytest.raises(PrevadError, match="url must not be empty"):
        stream_candidate("", 5)
