"""`extract --store` commits finished clips together: fewer commits, same rows, and a clip whose
commit is refused fails alone (its neighbours in the commit land)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from lagovad.extract import ExtractError, extract, make_protocol
from lagovad.extraction.jobs import ExtractSummary
from lagovad.extraction.pipeline import late_failures
from lagovad.extraction.sinks import StoreSink
from lagovad.image_encoder import load_image_encoder
from prevad import Store
from prevad.errors import DuplicateIdError
from tests.lagovad.helpers import write_video


@pytest.fixture(scope="module")
def tiny_encoder(tiny_open_clip_checkpoint):
    return load_image_encoder("lagovad-clip-tiny", tiny_open_clip_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def five_gray_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("five_gray")
    for i in range(5):
        write_video(folder / f"gray{i}.mp4", 24 + 8 * i)
    return folder


def _commits(store: Store) -> int:
    """Part files of the features table: one per commit (too few to be compacted)."""
    return len(list((store.root / "tables" / "features").rglob("part-*.parquet")))


@pytest.mark.parametrize("every, commits", [(1, 5), (2, 3), (32, 1)])
def test_clips_are_committed_together(tmp_path, five_gray_videos, tiny_encoder, every, commits):
    store = Store.init(tmp_path / "store")
    summary = extract([five_gray_videos], tiny_encoder, store=store, progress=False,
                      commit_every=every)
    assert (summary.extracted, summary.failed) == (5, 0)
    feats = {r["video_id"]: r for r in store.read("features").to_pylist()}
    ok = {r["id"] for r in store.read("stage_results").to_pylist() if r["status"] == "ok"}
    assert set(feats) == ok and len(ok) == 5
    for vid, row in feats.items():
        assert store.load_features(row).shape == (summary.counts[vid], row["dim"])
    # the rows of one commit share its time: batching is visible in the store
    assert _commits(store) == commits


@pytest.mark.parametrize("background", [True, False])
def test_refused_commit_fails_only_its_clip(tmp_path, five_gray_videos, tiny_encoder,
                                            background):
    """Another writer stored clip A's features (other values) while A awaited its commit."""
    store = Store.init(tmp_path / "store")
    protocol = make_protocol(tiny_encoder, 8, None, None)
    mine = StoreSink(store, "m", protocol, commit_items=10, background=background)
    other = StoreSink(Store(store.root), "m", protocol, commit_items=10, background=background)
    a, b = mine.jobs(sorted(five_gray_videos.glob("*.mp4"))[:2])
    assert mine.write(a, np.ones((3, 4), np.float32), 24) == []
    assert other.write(a, np.zeros((3, 4), np.float32), 24) == []
    assert other.close() == []
    assert mine.write(b, np.ones((4, 4), np.float32), 32) == []
    failed = mine.close()  # the commit thread's result
    assert [(j.key, type(e)) for j, e in failed] == [(a.key, DuplicateIdError)]
    feats = {r["video_id"]: store.load_features(r) for r in store.read("features").to_pylist()}
    assert set(feats) == {a.key, b.key} and not feats[a.key].any()  # the other writer's
    rows = [(r["id"], r["status"], r["attempt"]) for r in store.read("stage_results").to_pylist()]
    # a's attempt 1 is the other writer's; this run's failure of a takes the next number
    assert sorted(rows) == sorted([(a.key, "ok", 1), (a.key, "failed", 2), (b.key, "ok", 1)])


def test_late_failures_are_counted_as_failed():
    class Job:
        key, path = "c1", "x.mp4"

    s = ExtractSummary(total=2, extracted=2, counts={"c1": 3, "c2": 4}, n_frames={"c1": 24})
    late_failures(s, [(Job(), DuplicateIdError("clash"))])
    assert (s.extracted, s.failed, set(s.counts)) == (1, 1, {"c2"})
    assert s.failures[0]["key"] == "c1" and "clash" in s.failures[0]["reason"]


def test_commit_every_is_checked(tmp_path, tiny_encoder, tiny_open_clip_checkpoint,
                                 five_gray_videos):
    store = Store.init(tmp_path / "store")
    with pytest.raises(ExtractError, match="commit_every|--commit-every"):
        extract([five_gray_videos], tiny_encoder, store=store, progress=False, commit_every=0)
    import typer

    from lagovad.commands.extract import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["extract", str(five_gray_videos), "--store", str(
        store.root), "--model", "lagovad-clip-tiny", "--pretrained",
        str(tiny_open_clip_checkpoint), "--commit-every", "0"])
    assert res.exit_code == 2 and "--commit-every" in res.output
