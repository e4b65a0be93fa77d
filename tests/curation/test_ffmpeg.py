"""The ffmpeg binary, how the media stages run it, and probing of downloaded files."""

import os
import shutil

import pytest

from curation.common import ProbeError, probe_video
from curation.ffmpeg import FfmpegFailed, ffmpeg_path, ffmpeg_version, run_ffmpeg
from tests.curation import webservers

vfr_mp4 = webservers.vfr_mp4  # fixture


def test_ffmpeg_binary_is_available_without_root():
    path = ffmpeg_path()
    assert path.is_file() and os.access(path, os.X_OK)
    assert ffmpeg_version().startswith("ffmpeg version")


# ------------------------------------------------------------------- probing downloaded files

def test_probe_gives_a_vfr_file_its_true_duration(vfr_mp4):
    info = probe_video(vfr_mp4)
    # 60 frames at 30 fps + 20 at 10 fps: 4.0 s (the average rate alone would say 3.8 s)
    assert info.duration_s == pytest.approx(4.0, abs=1e-3)
    assert info.n_frames == 80 and info.fps == pytest.approx(20.0, abs=1e-3)
    assert info.variable_frame_rate is True


def test_probe_of_a_constant_rate_file(small_mp4):
    info = probe_video(small_mp4)
    assert (info.n_frames, info.fps, info.duration_s) == (100, 25.0, 4.0)
    assert info.variable_frame_rate is False


@pytest.mark.parametrize("keep", [0.6, 0.95, 0.999])
def test_probe_finds_a_file_cut_anywhere(small_mp4, tmp_path, keep):
    data = small_mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ProbeError, match="truncated"):
        probe_video(cut)


def test_probe_refuses_non_video_and_empty_files(tmp_path):
    text = tmp_path / "t.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(ProbeError, match="not a readable video"):
        probe_video(text)
    empty = tmp_path / "e.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ProbeError, match="empty file"):
        probe_video(empty)
    with pytest.raises(ProbeError, match="no file"):
        probe_video(tmp_path / "missing.mp4")


def test_full_decode_agrees_with_the_packet_probe(small_mp4, vfr_mp4):
    for f in (small_mp4, vfr_mp4):
        assert probe_video(f) == probe_video(f, full_decode=True)


def test_ffmpeg_may_not_read_local_files_when_it_reads_the_network(small_mp4, tmp_path):
    from curation.ffmpeg import NETWORK_PROTOCOLS

    with pytest.raises(FfmpegFailed, match="(?i)protocol.*not on whitelist|not on whitelist"):
        run_ffmpeg(["-i", str(small_mp4), "-f", "null", "-"], timeout_s=30,
                   protocols=NETWORK_PROTOCOLS)


def test_ffmpeg_is_killed_at_its_timeout(tmp_path):
    # an endless synthetic source: only the timeout ends it
    with pytest.raises(FfmpegFailed, match="did not finish within"):
        run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-f", "null", "-"],
                   timeout_s=1.0, protocols="file")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_ffmpeg_verifies_https_servers(small_mp4, tmp_path):
    from curation.ffmpeg import tls_args
    from tests.curation.webservers import Route, WebServer, make_tls

    server_tls, _ = make_tls(tmp_path / "tls")
    srv = WebServer(tls=server_tls)
    try:
        srv.add("a.mp4", Route(file=small_mp4))
        url = f"https://localhost:{srv.port}/a.mp4"
        assert "-ca_file" in tls_args(url) and tls_args("http://x/a.mp4") == []
        with pytest.raises(FfmpegFailed, match="(?i)certificate"):  # a test authority: unknown
            run_ffmpeg([*tls_args(url), "-i", url, "-f", "null", "-"], timeout_s=60,
                       protocols="https,tls,tcp")
    finally:
        srv.close()
