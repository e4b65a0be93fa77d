"""Feature extraction: the authors' protocol, resume without decoding, failures isolated."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lagovad.commands.extract import register
from lagovad.extract import FAILURES_FILE, STAGE, ExtractError, extract, make_protocol
from lagovad.image_encoder import PretrainedWeightsUnavailable, load_image_encoder
from prevad import Store
from tests.lagovad.helpers import write_video


@pytest.fixture(scope="module")
def tiny_encoder(tiny_open_clip_checkpoint):
    """The tiny open_clip image tower with the saved test weights, on CPU."""
    return load_image_encoder("lagovad-clip-tiny", tiny_open_clip_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def gray_videos_dir(tmp_path_factory) -> Path:
    """Folder with two gray mp4 videos (40 and 75 frames) and nothing else."""
    folder = tmp_path_factory.mktemp("gray_videos")
    write_video(folder / "gray40.mp4", 40)
    write_video(folder / "gray75.mp4", 75, width=48, height=64)
    return folder


@pytest.fixture()
def mixed_videos_dir(tmp_path, gray_videos_dir, robbery102_mp4) -> Path:
    """Two good gray videos plus an empty, a text and a truncated .mp4."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in gray_videos_dir.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "readme.mp4").write_text("not a video")
    (folder / "truncated.mp4").write_bytes(robbery102_mp4.read_bytes()[:300_000])
    return folder


def _naive_features(path: Path, encoder, stride: int = 8, offset: int = 4) -> np.ndarray:
    """Decode every frame to RGB (same bicubic resize), then take frames offset::stride."""
    h, w = encoder.image_size
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(width=w, height=h, format="rgb24", interpolation="BICUBIC")
                  for f in c.decode(video=0)]
    return encoder.encode(np.stack(frames[offset::stride]))


def test_default_protocol_on_robbery102(tmp_path, robbery102_mp4, tiny_encoder):
    assert tiny_encoder.image_size == (32, 32)  # the tiny CLIP's input size; ViT-B-16 uses 224
    summary = extract([robbery102_mp4], tiny_encoder, out_dir=tmp_path, progress=False)
    assert summary.extracted == 1 and summary.failed == 0
    feats = np.load(tmp_path / "Robbery102_x264.npy")
    assert summary.n_frames["Robbery102_x264"] == 1827
    assert feats.shape == (228, tiny_encoder.dim) and feats.dtype == np.float32
    # The rows are the encodings of frames 4, 12, ..., 1820, in order.
    np.testing.assert_allclose(feats, _naive_features(robbery102_mp4, tiny_encoder),
                               rtol=1e-4, atol=1e-4)
    protocol = json.loads((tmp_path / "extract_protocol.json").read_text())
    assert protocol["frame_stride"] == 8 and protocol["frame_offset"] == 4


def test_second_run_does_no_decoding(tmp_path, gray_videos_dir, tiny_encoder):
    first = extract([gray_videos_dir], tiny_encoder, out_dir=tmp_path, progress=False)
    assert first.extracted == 2 and first.decoded_videos == 2
    assert first.counts == {"gray40": 5, "gray75": 9}
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    second = extract([gray_videos_dir], tiny_encoder, out_dir=tmp_path, progress=False)
    assert (second.skipped, second.extracted, second.decoded_videos) == (2, 0, 0)
    assert second.frames_decoded == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")} == mtimes


def test_corrupt_files_fail_alone(tmp_path, mixed_videos_dir, tiny_encoder):
    out = tmp_path / "out"
    summary = extract([mixed_videos_dir], tiny_encoder, out_dir=out, progress=False)
    assert (summary.extracted, summary.failed) == (2, 3)
    assert sorted(p.name for p in out.glob("*.npy")) == ["gray40.npy", "gray75.npy"]
    assert np.load(out / "gray75.npy").shape == (9, tiny_encoder.dim)
    failures = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    assert sorted(f["key"] for f in failures) == ["empty", "readme", "truncated"]
    assert all(f["reason"] and f["path"] for f in failures)
    reasons = {f["key"]: f["reason"] for f in failures}
    assert "empty" in reasons["empty"]
    # A rerun retries only the failures; finished videos are not decoded again.
    again = extract([mixed_videos_dir], tiny_encoder, out_dir=out, progress=False)
    assert (again.skipped, again.failed, again.decoded_videos) == (2, 3, 3)


def test_batches_across_videos_match_per_video_encoding(tmp_path, gray_videos_dir,
                                                        tiny_encoder):
    small = extract([gray_videos_dir], tiny_encoder, out_dir=tmp_path / "b3", batch_size=3,
                    decode_workers=2, progress=False)
    big = extract([gray_videos_dir], tiny_encoder, out_dir=tmp_path / "b64", batch_size=64,
                  decode_workers=1, progress=False)
    assert small.extracted == big.extracted == 2
    for name in ("gray40", "gray75"):
        a = np.load(tmp_path / "b3" / f"{name}.npy")
        b = np.load(tmp_path / "b64" / f"{name}.npy")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a, _naive_features(gray_videos_dir / f"{name}.mp4",
                                                      tiny_encoder), rtol=1e-4, atol=1e-4)


def test_store_output_resume_and_failure_rows(tmp_path, mixed_videos_dir, tiny_encoder):
    store = Store.init(tmp_path / "store")
    export = tmp_path / "export"
    summary = extract([mixed_videos_dir], tiny_encoder, store=store, export_dir=export,
                      progress=False)
    assert (summary.extracted, summary.failed) == (2, 3)
    rows = store.read("features").to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert (row["frame_stride"], row["frame_offset"], row["frame_size"]) == (8, 4, 32)
        assert row["model_id"] == tiny_encoder.model_id
        stem = Path(next(v["uri"] for v in store.read("videos").to_pylist()
                         if v["video_id"] == row["video_id"])).stem
        np.testing.assert_array_equal(store.load_features(row), np.load(export / f"{stem}.npy"))
    results = store.read("stage_results").to_pylist()
    failed = [r for r in results if r["stage"] == STAGE and r["status"] == "failed"]
    assert len(failed) == 3 and all(r["reason"] for r in failed)
    # Rerun over the store's own videos: finished ones are skipped without decoding.
    again = extract(None, tiny_encoder, store=store, progress=False)
    assert (again.total, again.skipped, again.decoded_videos) == (5, 2, 3)
    attempts = {r["attempt"] for r in store.read("stage_results").to_pylist()
                if r["status"] == "failed"}
    assert attempts == {1, 2}


def test_other_protocol_in_same_output_is_refused(tmp_path, gray_videos_dir, tiny_encoder):
    extract([gray_videos_dir / "gray40.mp4"], tiny_encoder, out_dir=tmp_path, progress=False)
    with pytest.raises(ExtractError, match="stride"):
        extract([gray_videos_dir / "gray40.mp4"], tiny_encoder, out_dir=tmp_path, stride=4,
                progress=False)


def test_size_must_be_the_encoder_input_size(tiny_encoder):
    assert make_protocol(tiny_encoder).size == 32
    with pytest.raises(ExtractError, match="224"):
        make_protocol(tiny_encoder, size=224)


def test_missing_default_weights_say_so_offline():
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        load_image_encoder(device="cpu")
    message = str(err.value)
    assert "ViT-B-16" in message and "'openai'" in message and "--pretrained" in message


def test_cli_extract_writes_npy(tmp_path, gray_videos_dir, tiny_open_clip_checkpoint):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, [
        "extract", str(gray_videos_dir / "gray40.mp4"), "--out", str(tmp_path),
        "--model", "lagovad-clip-tiny", "--pretrained", str(tiny_open_clip_checkpoint),
        "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "extracted 1" in result.output
    assert np.load(tmp_path / "gray40.npy").shape == (5, 32)


def test_cli_extract_fails_when_every_input_failed(tmp_path, gray_videos_dir,
                                                   tiny_open_clip_checkpoint):
    app = typer.Typer()
    register(app)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "readme.mp4").write_text("not a video")
    args = ["--out", str(tmp_path / "out"), "--model", "lagovad-clip-tiny", "--pretrained",
            str(tiny_open_clip_checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(app, ["extract", str(bad), *args])
    assert result.exit_code == 2, result.output
    assert "every input failed (2 of 2 videos" in result.output
    assert "failed: " in result.output and "empty.mp4" in result.output
    # one good input among bad ones is a partial success: exit 0, failures listed
    (bad / "gray40.mp4").write_bytes((gray_videos_dir / "gray40.mp4").read_bytes())
    result = CliRunner().invoke(app, ["extract", str(bad), *args])
    assert result.exit_code == 0, result.output
    assert "extracted 1" in result.output and "failed 2" in result.output
