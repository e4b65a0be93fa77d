"""Duplicate detection on generated videos with planted copies: an identical file, a re-encoded,
a half-size, a trimmed and a re-timed copy, and distinct videos that look alike (same palette
and layout; the same place filmed with a moving camera) that must not merge."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curation.dedup import DedupConfig, dedup, duplicate_groups, make_stage
from curation.fingerprints import Fingerprint, frame_hashes, match
from curation.shot_eval import duplicate_scores
from curation.shot_media import Shot, Transition, copy_video, render
from prevad import Store
from prevad.errors import ValidationError
from prevad.records import Video
from toolkit.cli import app

FPS = 15
SIZE = (96, 128)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Originals, their planted copies, and look-alike distinct videos (named after content)."""
    d = tmp_path_factory.mktemp("dedup_media")
    out: dict[str, Path] = {}

    def make(name, shots, transitions=()):
        out[name] = d / f"{name}.mp4"
        render(out[name], shots, list(transitions), fps=FPS, size=SIZE)

    make("street_two_shots", [Shot(40, seed=1, palette=0, objects=2),
                              Shot(35, seed=2, palette=0, objects=1)], [Transition("cut")])
    make("park_pan", [Shot(60, seed=3, palette=3, pan=(1.5, 0.0))])
    # look-alikes: the street's palette and generator with another seed; the park scene (same
    # seed: same place) filmed with the camera panning the other way and other people
    make("street_lookalike", [Shot(75, seed=101, palette=0, objects=2)])
    make("park_other_take", [Shot(60, seed=3, palette=3, pan=(-1.5, 0.5), objects=4)])
    src = out["street_two_shots"]
    out["street_exact"] = d / "street_exact.mp4"
    shutil.copy(src, out["street_exact"])
    out["street_reencoded"] = copy_video(src, d / "street_reencoded.mp4", crf=38)
    out["street_half_size"] = copy_video(src, d / "street_half_size.mp4", scale=0.5)
    out["street_trimmed"] = copy_video(src, d / "street_trimmed.mp4", trim=(0.8, 0.6))
    out["street_retimed_small"] = copy_video(src, d / "street_retimed_small.mp4", scale=0.6,
                                             fps=10, crf=34, trim=(0.4, 0.0))
    out["park_half_size"] = copy_video(out["park_pan"], d / "park_half_size.mp4", scale=0.5)
    return out


def _add(store: Store, paths: list[Path]) -> dict[str, Video]:
    """Videos acquired in list order (created_at one minute apart), ids in another order."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    videos = {p.stem: Video.create("test", p.stem, uri=str(p),
                                   created_at=t0 + timedelta(minutes=k))
              for k, p in enumerate(paths)}
    store.append("videos", list(videos.values()))
    return videos


def _decisions(store: Store) -> dict[str, tuple[str, str | None, dict]]:
    rows = [r for r in store.records("stage_results") if r.stage == "dedup"]
    return {r.id: (r.status, r.reason, r.output or {}) for r in rows}


def test_planted_copies_are_found_and_the_first_acquired_is_kept(media, tmp_path):
    store = Store.init(tmp_path / "store")
    order = ["street_reencoded", "street_two_shots", "street_exact", "street_half_size",
             "street_trimmed", "street_retimed_small", "street_lookalike", "park_pan",
             "park_other_take", "park_half_size"]
    videos = _add(store, [media[n] for n in order])
    ids = [v.video_id for v in videos.values()]
    assert ids != sorted(ids)  # the work list (by id) is not the acquisition order
    summary = dedup(store)
    assert summary.items == 10 and summary.failed == 0
    got = _decisions(store)
    name = {v.video_id: n for n, v in videos.items()}
    copies = {name[i]: name[o["duplicate_of"]] for i, (_, _, o) in got.items()
              if o.get("duplicate_of")}
    # the re-encoded copy came first: the original and every other copy point to it
    assert copies == {"street_two_shots": "street_reencoded", "street_exact": "street_reencoded",
                      "street_half_size": "street_reencoded",
                      "street_trimmed": "street_reencoded",
                      "street_retimed_small": "street_reencoded",
                      "park_half_size": "park_pan"}
    kept = {name[i] for i, (status, _, _) in got.items() if status == "ok"}
    assert kept == {"street_reencoded", "street_lookalike", "park_pan", "park_other_take"}
    exact = got[videos["street_exact"].video_id]
    assert exact[1] == "exact_duplicate" and exact[2]["distance"] == 0.0
    trimmed = got[videos["street_trimmed"].video_id][2]
    assert trimmed["kind"] == "near" and 0 <= trimmed["distance"] < 0.1
    assert trimmed["offset_s"] == pytest.approx(0.8, abs=0.25)  # where the copy starts
    truth = [["street_reencoded", "street_two_shots", "street_exact", "street_half_size",
              "street_trimmed", "street_retimed_small"], ["park_pan", "park_half_size"]]
    scores = duplicate_scores(copies, truth, items=order)
    assert (scores.precision, scores.recall) == (1.0, 1.0)
    assert {name[k]: sorted(name[c] for c in v) for k, v in duplicate_groups(
        store, DedupConfig().version()).items()} == {
        "park_pan": ["park_half_size"],
        "street_reencoded": sorted(truth[0][1:])}


def test_a_later_video_meets_the_stored_fingerprints_without_decoding_them_again(media,
                                                                                 tmp_path):
    store = Store.init(tmp_path / "store")
    original = tmp_path / "street_two_shots.mp4"
    shutil.copy(media["street_two_shots"], original)
    first = _add(store, [original, media["park_pan"]])
    assert dedup(store).ok == 2
    original.unlink()  # the kept file is gone: only its stored fingerprint can be compared
    later = Video.create("test", "street_trimmed", uri=str(media["street_trimmed"]),
                         created_at=datetime(2027, 1, 1, tzinfo=UTC))
    store.append("videos", [later])
    summary = dedup(store)
    assert summary.items == 1 and summary.rejected == {"near_duplicate": 1}
    out = _decisions(store)[later.video_id][2]
    assert out["duplicate_of"] == first["street_two_shots"].video_id


def test_exact_only_and_broken_inputs(media, tmp_path):
    store = Store.init(tmp_path / "store")
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    videos = _add(store, [media["street_two_shots"], media["street_exact"],
                          media["street_reencoded"], tmp_path / "junk.mp4"])
    s = dedup(store, DedupConfig(near=False))
    # identical bytes only: the re-encoded copy is kept; nothing is decoded (junk passes too)
    assert s.ok == 3 and s.rejected == {"exact_duplicate": 1}
    s = dedup(store)
    assert s.failed == 1 and s.rejected == {"exact_duplicate": 1, "near_duplicate": 1}
    assert "cannot open" in [r for r in store.records("stage_results")
                             if r.id == videos["junk"].video_id][-1].error


def test_options_are_checked_and_the_command_shows_groups(media, tmp_path):
    for bad in ({"min_match": 2.0}, {"rate": 0.0}, {"frame_bits": 40}, {"min_votes": 0},
                {"near": "yes"}, {"min_cover": float("nan")}):
        with pytest.raises(ValidationError):
            DedupConfig(**bad)
    store = Store.init(tmp_path / "store")
    videos = _add(store, [media["park_pan"], media["park_half_size"]])
    runner = CliRunner()
    res = runner.invoke(app, ["curate", "dedup", str(store.root), "--min-match", "2"])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "min_match" in res.output
    assert store.read("stage_results").num_rows == 0
    res = runner.invoke(app, ["curate", "dedup", str(store.root), "--show"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == {
        "kept": videos["park_pan"].video_id, "duplicates": [videos["park_half_size"].video_id]}
    assert "near_duplicate=1" in res.output


def test_fingerprints_survive_a_round_trip_and_align_trimmed_copies(media):
    a = frame_hashes(media["street_two_shots"], rate=4.0)
    b = frame_hashes(media["street_trimmed"], rate=4.0)
    again = Fingerprint.from_dict(json.loads(json.dumps(a.to_dict())))
    assert np.array_equal(again.hashes, a.hashes) and np.allclose(again.times, a.times, atol=1e-3)
    m = match(b, a)
    assert m.share >= 0.9 and m.cover == 1.0 and m.offset_s == pytest.approx(0.75, abs=0.25)
    far = match(frame_hashes(media["street_lookalike"]), a)
    assert far is None or far.share < 0.5


def test_band_index_finds_a_noisy_copy_among_thousands_without_pairwise_work(tmp_path):
    rng = np.random.default_rng(0)
    deduper = make_stage(Store.init(tmp_path / "store")).process
    stored = {o: rng.integers(0, 2**63, size=60, dtype=np.uint64) for o in range(3000)}
    for o, h in stored.items():
        deduper.kept.append(f"v{o}")
        deduper.useful.append(60)
        deduper.prints[o] = Fingerprint(4.0, np.arange(60) / 4.0, h, np.ones(60, bool))
        deduper.index.add(o, h)
    # owner 1777's hashes with 4 random bits flipped each (a re-encoded copy)
    flips = np.zeros(60, np.uint64)
    for _ in range(4):
        flips |= np.uint64(1) << rng.integers(0, 64, size=60).astype(np.uint64)
    query = Fingerprint(4.0, np.arange(60) / 4.0, stored[1777] ^ flips, np.ones(60, bool))
    votes = deduper.index.votes(query.hashes)
    assert max(votes, key=votes.get) == 1777 and votes[1777] >= 20
    # random 16-bit band collisions touch many videos, but only the copy is aligned in full
    assert sum(1 for v in votes.values() if v >= 2) > 10
    assert deduper.candidates(query) == [1777]


def _world_event_video(dst: Path, scene_seed: int, hue: float, pattern: str,
                       n: int = 75) -> Path:
    """A generated-world scene (320x240) with the world's ``pattern`` overlaid on all but its
    first and last half second: most of the picture is the same as in any other such video."""
    from curation.world.media import SceneLook, encode, event_overlay, scene_frame

    look, lead = SceneLook(scene_seed, hue), FPS // 2

    def frames():
        for t in range(n):
            img = scene_frame(look, t, 320, 240).copy()
            if lead <= t < n - lead:
                event_overlay(img, pattern, t - lead, n - 2 * lead, seed=7)
            yield img

    encode(dst, frames(), FPS, 320, 240)
    return dst


def test_distinct_videos_sharing_a_large_overlay_stay_apart_while_its_copy_merges(tmp_path):
    # two different scenes under the same large event for most of their length (as the
    # generated world's anomalies of one class): their aligned frames match on the overlay,
    # so only the mean distance over the whole overlap tells them apart from a copy
    street = _world_event_video(tmp_path / "street_beast.mp4", 2, 0.6, "striped_beast")
    park = _world_event_video(tmp_path / "park_beast.mp4", 4, 0.6, "striped_beast")
    park_copy = copy_video(park, tmp_path / "park_beast_reencoded.mp4", crf=36, scale=0.75)
    m = match(frame_hashes(park), frame_hashes(street))
    assert m is not None and m.share >= DedupConfig().min_match  # the share alone would merge
    store = Store.init(tmp_path / "store")
    videos = _add(store, [street, park, park_copy])
    dedup(store, DedupConfig())
    got = _decisions(store)
    vid = {name: v.video_id for name, v in videos.items()}
    assert got[vid["street_beast"]][0] == "ok"
    assert got[vid["park_beast"]][0] == "ok", got[vid["park_beast"]]
    status, reason, out = got[vid["park_beast_reencoded"]]
    assert (status, reason, out["duplicate_of"]) == ("rejected", "near_duplicate",
                                                     vid["park_beast"])
