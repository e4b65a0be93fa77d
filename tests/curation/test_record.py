"""Recording an HLS stream that ffmpeg writes and the test server serves."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from curation.acquire import AcquireSettings, acquire
from curation.ffmpeg import ffmpeg_path
from curation.record import RecordSettings, add_streams, record, stream_candidate
from prevad.errors import PrevadError, ValidationError
from prevad.records import SourceCandidate
from tests.curation import webservers
from tests.curation.webservers import LiveHls, Route, finishes, hls_segments


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


# --------------------------------------------------------------- network policy and bounds
web, other_web = webservers.web, webservers.other_web  # fixtures
LOCAL = dict(socket_timeout_s=5, allow_private_network=True)


@pytest.fixture
def live(web, small_mp4, tmp_path):
    """An endless live HLS playlist on ``web`` (1 s segments cycled forever)."""
    index = hls_segments(small_mp4, tmp_path / "live")
    return web.add("live.m3u8", Route(live=LiveHls(sorted(index.parent.glob("seg*.ts")))))


def test_endless_live_stream_is_recorded_for_the_asked_length(store, web, live):
    [cand] = add_streams(store, [live], 2.0)
    summary = finishes(lambda: record(store, RecordSettings(**LOCAL)))
    assert summary.ok == 1, _status(store, cand.candidate_id)
    [video] = store.records("videos")
    assert video.duration_s == pytest.approx(2.0, abs=0.15)
    assert web.hits("live.m3u8") >= 1 and any(r.path.startswith("seg") for r in web.requests)


def test_loopback_stream_is_refused_by_default(store, web, live):
    [cand] = add_streams(store, [live], 2.0)
    summary = record(store, RecordSettings())
    assert summary.rejected == {"private_address": 1}
    assert "--allow-private-network" in _status(store, cand.candidate_id).output["error"]
    assert web.hits() == 0


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:9000", "udp://127.0.0.1:9000",
                                 "file:///etc/passwd", "rtmp://127.0.0.1/live/x",
                                 "rtsp://127.0.0.1/cam", "concat:/etc/passwd"])
def test_only_http_stream_schemes_are_recorded(store, url):
    [cand] = add_streams(store, [url], 1.0)
    summary = record(store, RecordSettings(**LOCAL))
    assert summary.rejected == {"scheme_not_allowed": 1}
    assert "is not allowed" in _status(store, cand.candidate_id).output["error"]


def test_segment_on_a_disallowed_address_rejects_the_recording(store, web, other_web, small_mp4,
                                                               tmp_path):
    index = hls_segments(small_mp4, tmp_path / "hls")
    other_web.add("x", Route(live=LiveHls(sorted(index.parent.glob("seg*.ts")))))
    url = web.add("live.m3u8", Route(live=LiveHls(sorted(index.parent.glob("seg*.ts"))),
                                     segment_prefix=other_web.base + "/"))
    [cand] = add_streams(store, [url], 2.0)
    summary = finishes(lambda: record(store, RecordSettings(
        socket_timeout_s=5, allow_addresses=(web.address,))))
    assert summary.rejected == {"private_address": 1}, _status(store, cand.candidate_id)
    assert web.hits("live.m3u8") >= 1 and other_web.hits() == 0
    assert store.read("videos").num_rows == 0


def test_max_bytes_ends_a_recording(store, live):
    [cand] = add_streams(store, [live], 30.0)
    summary = finishes(lambda: record(store, RecordSettings(max_bytes=20_000, **LOCAL)))
    assert summary.rejected == {"too_large": 1}, _status(store, cand.candidate_id)
    assert "--max-bytes 20000" in _status(store, cand.candidate_id).output["error"]


def test_stalled_stream_ends_at_the_wall_clock_timeout(store, web):
    url = web.add("stuck.m3u8", Route(body=b"#EXTM3U\n", stall_s=30))
    [cand] = add_streams(store, [url], 2.0)
    summary = finishes(lambda: record(store, RecordSettings(timeout_s=1.5, socket_timeout_s=20,
                                                            allow_private_network=True)))
    assert summary.failed == 1
    assert _status(store, cand.candidate_id).error.startswith("timeout: item did not finish")


def test_asked_length_over_max_duration_is_rejected_before_recording(store, web, live):
    add_streams(store, [live], 60.0)
    summary = record(store, RecordSettings(max_duration_s=10, **LOCAL))
    assert summary.rejected == {"too_long": 1} and web.hits() == 0


def test_tall_stream_is_scaled_to_max_height(store, web, tmp_path):
    from lagovad.video import write_video
    from tests.curation.conftest import colour_frames

    tall = write_video(tmp_path / "tall.mp4", 50, colour_frames([(9, 9, 200)], [50],
                                                                size=(320, 240)),
                       lossless=False, faststart=True)
    index = hls_segments(tall, tmp_path / "tall")
    for f in index.parent.iterdir():
        web.add(f"tall/{f.name}", Route(file=f))
    [cand] = add_streams(store, [web.url("tall/index.m3u8")], 2.0)
    assert record(store, RecordSettings(max_height=120, **LOCAL)).ok == 1
    [video] = store.records("videos")
    assert (video.width, video.height) == (90, 120)
    assert _status(store, cand.candidate_id).output["transcoded"]["from"] == [240, 320]


@pytest.mark.parametrize("bad, words", [
    (dict(timeout_s=float("nan")), "--timeout (timeout_s)"),
    (dict(socket_timeout_s=-1), "--socket-timeout (socket_timeout_s)"),
    (dict(max_bytes=-5), "--max-bytes (max_bytes)"),
    (dict(short_fraction=2.0), "--short-fraction"),
    (dict(concurrency=1000), "--concurrency"),
])
def test_bad_record_settings_are_one_clear_error(bad, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        RecordSettings(**bad)


def test_bad_record_option_writes_nothing(store):
    from toolkit.cli import app

    res = CliRunner().invoke(app, ["curate", "record", str(store.root), "--url",
                                   "http://127.0.0.1:9/x.m3u8", "--timeout", "nan"])
    assert res.exit_code == 2 and res.output.startswith("error: --timeout (timeout_s)")
    assert store.read("candidates").num_rows == 0  # the stream was not even registered
