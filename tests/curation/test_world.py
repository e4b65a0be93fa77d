"""The generated curation world (curation.world): its files hold the truth its table states."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from curation.corpora import read_corpus
from curation.world import (
    TEST_ANNOTATIONS,
    TEST_DEFINITION,
    generate_world,
    load_shots,
    load_truth,
    span_truth,
)
from curation.world.generate import _write_file
from curation.world.grammar import ANOMALOUS, MISLEADING
from curation.world.media import EVENT_FADE, PATTERNS
from curation.world.plan import plan_world
from curation.world.serve import WorldServer
from prevad import taxonomy

N_VIDEOS = 20  # the smallest world that holds every planted case (duplicates, broken, VFR)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small world (20 corpus videos of the small profile, 3 test videos, the stream)."""
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, N_VIDEOS, seed=3, test_videos=3, scale_profile="small", workers=2)
    return out


@pytest.fixture(scope="module")
def truth(world) -> dict:
    return load_truth(world)


def _decode(path: Path) -> tuple[list[float], np.ndarray]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [f.time for f in frames], np.stack([f.to_ndarray(format="rgb24")
                                                   for f in frames])


def test_grammar_covers_the_taxonomy():
    assert set(ANOMALOUS) == set(taxonomy.SUB_CATEGORIES)
    assert all(len(t) >= 2 for t in ANOMALOUS.values())
    assert set(PATTERNS) == set(taxonomy.TOP_LEVEL)
    assert len(set(PATTERNS.values())) == len(PATTERNS)  # one pattern per top-level class


def test_world_holds_every_planted_case(world, truth):
    corpus = [r for r in truth.values() if r["split"] == "corpus"]
    assert len(corpus) == N_VIDEOS
    kinds = {r["caption_kind"] for r in corpus}
    assert kinds == {"anomalous", "normal", "misleading"}
    # 30% anomalous captions as planned; a duplicate takes its original's caption kind
    n_dups = sum(r["dup_of"] is not None for r in corpus)
    assert abs(sum(r["caption_kind"] == "anomalous" for r in corpus) - 0.3 * N_VIDEOS) <= n_dups
    assert {r["dup_kind"] for r in corpus} >= {"original"}
    assert any(r["dup_of"] for r in corpus)
    assert sum(r["broken"] is not None for r in corpus) == 2
    assert any(r["vfr"] for r in corpus) and any(not r["ranges"] for r in corpus)
    assert any(r["compilation"] for r in corpus) and any(r["cut_frames"] for r in corpus)
    assert any(r["section_start_s"] is not None for r in corpus)
    misleading = [r for r in corpus if r["caption_kind"] == "misleading"]
    assert all(r["caption"] in MISLEADING and not r["is_anomaly"] for r in misleading)
    for r in corpus:  # an anomalous caption comes with its category's event, others with none
        assert r["is_anomaly"] == (r["category"] != "Normal") == bool(r["anomaly_frames"])
        if r["is_anomaly"]:
            assert r["top_level"] == taxonomy.top_level(r["category"])
            assert r["pattern"] == PATTERNS[r["top_level"]]
    assert sum(r["split"] == "test" for r in truth.values()) == 3
    assert sum(r["split"] == "stream" for r in truth.values()) == 1


def test_files_match_the_truth_table(world, truth):
    for wid, r in truth.items():
        path = world / r["file"]
        if r["broken"] is not None:
            continue
        times, frames = _decode(path)
        assert len(times) == r["n_frames"], wid
        assert frames.shape[1:3] == (r["height"], r["width"]), wid
        expected = r["frame_times"] if r["vfr"] else [k / r["fps"] for k in range(len(times))]
        assert np.allclose(times, expected, atol=1.5e-3), wid
        if r["vfr"]:  # a variable rate: the gaps between frames are not all equal
            assert len(set(np.round(np.diff(times), 3))) > 1
        # a hard cut changes the picture much more than a step inside a shot
        diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        inside = np.median(diff)
        for c in r["cut_frames"]:
            assert diff[c - 1] > max(3 * inside, 15), (wid, c, diff[c - 1], inside)
        for a, b in r["black_frames"]:
            assert frames[a:b].mean() < 8, wid
        for a, b in r["anomaly_frames"]:  # the event changes the picture while it lasts
            mid = (a + b) // 2
            before = frames[max(a - EVENT_FADE - 1, 0)].astype(np.int16)  # before its fade-in
            assert np.abs(frames[mid].astype(np.int16) - before).mean() > 20, wid


def test_duplicates_and_broken_files(world, truth):
    for r in truth.values():
        if r["dup_kind"] == "exact":
            orig = truth[r["dup_of"]]
            assert (world / r["file"]).read_bytes() == (world / orig["file"]).read_bytes()
        elif r["dup_kind"] in ("reencoded", "resized", "trimmed"):
            orig = truth[r["dup_of"]]
            assert (world / r["file"]).read_bytes() != (world / orig["file"]).read_bytes()
            _, copy = _decode(world / r["file"])
            _, first = _decode(world / orig["file"])
            k = r["trim_start_frames"]
            assert len(copy) == r["n_frames"] <= orig["n_frames"]
            # the copy's frame i is the original's frame i + trim (resized for the comparison)
            import cv2

            a = cv2.resize(copy[len(copy) // 2], (64, 48)).astype(np.int16)
            b = cv2.resize(first[len(copy) // 2 + k], (64, 48)).astype(np.int16)
            assert np.abs(a - b).mean() < 12
            assert [[x + k, y + k] for x, y in r["anomaly_frames"]] == orig["anomaly_frames"]
        if r["broken"] is not None:
            with pytest.raises((av.error.FFmpegError, OSError, ValueError)):
                _decode(world / r["file"])


def test_generation_is_deterministic(world, tmp_path):
    plans = plan_world(N_VIDEOS, seed=3, test_videos=3, profile="small")
    again = plan_world(N_VIDEOS, seed=3, test_videos=3, profile="small")
    assert plans == again
    assert plans != plan_world(N_VIDEOS, seed=4, test_videos=3, profile="small")
    for p in [p for p in plans if p.broken is None and p.dup_kind != "exact"][:3]:
        _write_file(tmp_path, p)
        assert (tmp_path / p.file).read_bytes() == (world / p.file).read_bytes()


def test_shots_tile_every_video(world, truth):
    shots = load_shots(world)
    for wid, r in truth.items():
        rows = shots[wid]
        assert rows[0]["start_frame"] == 0 and rows[-1]["end_frame"] == r["n_frames"]
        for a, b in zip(rows, rows[1:], strict=False):  # cuts meet, dissolves overlap
            if b["transition"] == "dissolve":
                assert b["start_frame"] == a["end_frame"] - b["dissolve_frames"]
            else:
                assert b["start_frame"] == a["end_frame"]
        assert sum(s["has_event"] for s in rows) == (1 if r["is_anomaly"] else 0)


def test_span_truth_maps_clips_and_sections():
    row = {"world_id": "w000001", "fps": 20.0, "n_frames": 200, "frame_times": [],
           "category": "Car Accident", "anomaly_frames": [[60, 100]]}
    whole = span_truth(row)
    assert whole.spans == ((60, 100),) and whole.n_frames == 200
    assert whole.relative() == [[0.3, 0.5]] and whole.top_level == "Vehicle Accident"
    clip = span_truth(row, 2.5, 6.0)  # frames 50..120
    assert (clip.first_frame, clip.n_frames, clip.spans) == (50, 70, ((10, 50),))
    part = span_truth(row, 4.0, 7.0)  # the event's end only
    assert part.spans == ((0, 20),) and part.category == "Car Accident"
    after = span_truth(row, 5.0, 10.0)
    assert not after.is_anomaly and after.category == "Normal" and after.top_level == "Normal"
    # seconds rounded to 6 digits (what clean stores) still land on the frame
    assert span_truth(row, round(61 / 20 + 4e-7, 6), None).first_frame == 61
    vfr = {**row, "frame_times": [0.0, 0.05, 0.15, 0.25, 0.3], "n_frames": 5,
           "anomaly_frames": [[2, 4]]}
    assert span_truth(vfr, 0.15, 0.3).spans == ((0, 2),)
    assert span_truth(vfr, 0.05, 0.15).spans == ()


def test_test_split_is_a_benchmark(world, truth):
    from lagovad.eval.benchmarks import load_benchmark, load_definition

    bench = load_benchmark("world", world / TEST_ANNOTATIONS)
    defn = load_definition("world", world / TEST_DEFINITION)
    tests = {k: r for k, r in truth.items() if r["split"] == "test"}
    assert {v.name for v in bench.videos} == set(tests)
    for v in bench.videos:
        r = tests[v.name]
        assert v.class_name == r["category"]
        n = r["n_frames"]
        assert [list(s) for s in v.spans] == [[a / n, b / n] for a, b in r["anomaly_frames"]]
    assert set(defn.classes) == {r["category"] for r in tests.values() if r["is_anomaly"]}
    assert all(1 <= len(defn.descriptions[c]) <= 6 for c in defn.classes)


def test_served_world_with_and_without_ranges(world, truth, tmp_path):
    with WorldServer(world) as server:
        corpus = server.corpus(tmp_path / "corpus.csv")
        layout, caps = read_corpus(corpus)
        assert layout == "csv" and len(caps) == N_VIDEOS
        by_id = {c.source_video_id: c for c in caps}
        assert {c.source for c in caps} == {"world"}
        ranged = next(c for c in caps if "/norange/" not in c.url and not truth[
            c.source_video_id]["broken"])
        plain = next(c for c in caps if "/norange/" in c.url and not truth[
            c.source_video_id]["broken"])
        assert not truth[plain.source_video_id]["ranges"]
        req = urllib.request.Request(ranged.url, headers={"Range": "bytes=0-99"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 206 and len(resp.read()) == 100
            assert resp.headers["Accept-Ranges"] == "bytes"
        req = urllib.request.Request(plain.url, headers={"Range": "bytes=0-99"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            assert resp.status == 200 and resp.headers.get("Accept-Ranges") is None
        assert body == (world / truth[plain.source_video_id]["file"]).read_bytes()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url("../world.json"), timeout=10)
        assert err.value.code == 404
        req = urllib.request.Request(ranged.url, headers={"Range": "bytes=999999999-"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 416
        with urllib.request.urlopen(server.stream_url, timeout=10) as resp:
            playlist = resp.read().decode()
        assert "#EXTM3U" in playlist and ".ts" in playlist
        assert by_id  # every corpus row names its world id


def test_client_hanging_up_is_silent(world, truth, capfd):
    big = max((r for r in truth.values() if not r["broken"]), key=lambda r: r["n_frames"])
    with WorldServer(world) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        for _ in range(3):  # read a few bytes of the answer, then close the connection
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(f"GET /{big['url_path'] or big['file']} HTTP/1.1\r\nHost: x\r\n\r\n"
                          .encode())
                s.recv(100)
        time.sleep(0.5)
        with urllib.request.urlopen(server.url(big["url_path"]), timeout=10) as resp:
            assert resp.status == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err


def test_cli_generates_and_refuses_bad_input(tmp_path):
    from toolkit.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["curate", "world", str(tmp_path / "w"), "--videos", "2",
                             "--test-videos", "1", "--scale-profile", "small", "--categories",
                             "Fire,Violence", "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((tmp_path / "w" / "world.json").read_text())
    assert set(manifest["categories"]) == {"Fire", *taxonomy.children("Violence")}
    again = runner.invoke(app, ["curate", "world", str(tmp_path / "w"), "--videos", "2",
                                "--test-videos", "1", "--scale-profile", "small",
                                "--categories", "Fire,Violence", "--workers", "1"])
    assert again.exit_code == 0 and "0 files written" in again.output  # nothing redone
    # a run that stopped half-way (no world.json, a file missing) resumes: only the gap is made
    video = next((tmp_path / "w" / "media" / "videos").glob("*.mp4"))
    data = video.read_bytes()
    video.unlink()
    (tmp_path / "w" / "world.json").unlink()
    resumed = runner.invoke(app, ["curate", "world", str(tmp_path / "w"), "--videos", "2",
                                  "--test-videos", "1", "--scale-profile", "small",
                                  "--categories", "Fire,Violence", "--workers", "1"])
    assert resumed.exit_code == 0 and "1 files written" in resumed.output, resumed.output
    assert video.read_bytes() == data and (tmp_path / "w" / "world.json").is_file()
    blocker = tmp_path / "a-file"  # a file where the folder's parent should be (root may write
    blocker.write_text("x")       # into read-only folders, so permissions cannot stand in)
    cases = [
        (["--videos", "0"], tmp_path / "a", "videos: expected an integer >= 1, got 0"),
        (["--videos", "-3"], tmp_path / "b", "got -3"),
        (["--videos", "2", "--categories", "Jaywalking"], tmp_path / "c",
         "unknown PreVAD category 'Jaywalking'"),
        (["--videos", "2", "--categories", "Normal"], tmp_path / "d", "Normal is not"),
        (["--videos", "2"], blocker / "w", "cannot write the world into"),
        (["--videos", "4", "--test-videos", "1"], tmp_path / "w",
         "already holds another world"),
        (["--videos", "2", "--scale-profile", "huge"], tmp_path / "e", "scale profile"),
    ]
    for args, out, message in cases:
        res = runner.invoke(app, ["curate", "world", str(out), *args])
        lines = [x for x in res.output.splitlines() if x.strip()]
        assert res.exit_code == 2, (args, res.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            (args, res.output)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
