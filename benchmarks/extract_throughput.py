"""Extraction throughput: end-to-end pipeline vs the bare encoder forward vs a naive loop.

For each video (the real Robbery102_x264.mp4 and a generated long video), in one run:
- e2e: `lagovad.extract.extract` into a fresh folder (decode threads + batched encoding);
- bare: the encoder forward alone on the same sampled frames, pre-decoded and preprocessed;
- naive: decode every frame to full-size RGB, sample every 8th from index 4, resize
  (bicubic) and encode.
All figures are source-video frames per second of wall-clock time. Ratios:
`e2e_vs_bare` = e2e time / bare time (goal <= 1.3), `naive_vs_e2e` = naive time / e2e time
(goal > 1).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/extract_throughput.py                  # tiny
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/extract_throughput.py --model ViT-B-16 \
        --pretrained none --long-seconds 10 --real-frames 600                  # B/16, random
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lagovad.extract import extract  # noqa: E402
from lagovad.image_encoder import load_image_encoder  # noqa: E402
from lagovad.video import DecodeStats, iter_sampled_frames, write_video  # noqa: E402

REAL_VIDEO = Path(__file__).resolve().parents[2] / "shared/benchmarks/videos/Robbery102_x264.mp4"


def make_long_video(path: Path, seconds: float, fps: int = 30, width: int = 640,
                    height: int = 360) -> Path:
    """A synthetic H.264 video: a gradient background with a moving box."""
    n = int(seconds * fps)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height),
                     np.full_like(xx, 96)], axis=-1).astype(np.uint8)

    def frame(i: int) -> np.ndarray:
        img = base.copy()
        x = (i * 7) % (width - 80)
        img[100:180, x:x + 80] = (255, 255, 255)
        return img

    write_video(path, n, frame, fps=fps, lossless=False)
    return path


def cut_video(src: Path, dst: Path, max_frames: int) -> Path:
    """Re-mux the first packets of `src` covering about `max_frames` frames (no re-encode)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        frames = 0
        for packet in inp.demux(ist):
            if packet.dts is None:
                continue
            if packet.is_keyframe and frames >= max_frames:
                break
            packet.stream = ost
            out.mux(packet)
            frames += 1
    return dst


def bench_e2e(video: Path, encoder, batch_size: int, workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = extract([video], encoder, out_dir=tmp, batch_size=batch_size,
                    decode_workers=workers, progress=False)
        dt = time.perf_counter() - t0
    assert s.extracted == 1, s.failures
    return dt, s.frames_decoded


def bench_bare(video: Path, encoder, batch_size: int) -> float:
    size = encoder.image_size[0]
    frames = np.concatenate([c.frames for c in iter_sampled_frames(video, size=size,
                                                                   stats=DecodeStats())])
    pixels = [encoder.preprocess(frames[i:i + batch_size])
              for i in range(0, len(frames), batch_size)]
    sync()
    t0 = time.perf_counter()
    for x in pixels:
        encoder.forward(x)
    sync()
    return time.perf_counter() - t0


def bench_naive(video: Path, encoder, batch_size: int) -> float:
    size = encoder.image_size[0]
    t0 = time.perf_counter()
    with av.open(str(video)) as c:
        # Every frame goes to full-size RGB; only every 8th from index 4 is kept (memory).
        every = (f.to_ndarray(format="rgb24") for f in c.decode(video=0))
        sampled = [rgb for i, rgb in enumerate(every) if i % 8 == 4]
    out = []
    for i in range(0, len(sampled), batch_size):
        x = torch.as_tensor(np.stack(sampled[i:i + batch_size])).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic",
                                            align_corners=False).clamp(0, 255).to(torch.uint8)
        out.append(encoder.encode(x.permute(0, 2, 3, 1)))
    sync()
    return time.perf_counter() - t0


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lagovad-clip-tiny")
    ap.add_argument("--pretrained", default="none", help="tag, checkpoint file or 'none'")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--long-seconds", type=float, default=40.0)
    ap.add_argument("--real-video", type=Path, default=REAL_VIDEO)
    ap.add_argument("--real-frames", type=int, default=0,
                    help="use only about the first N frames of the real video (0 = all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    encoder = load_image_encoder(args.model, args.pretrained, device=args.device)
    size = encoder.image_size[0]
    encoder.encode(np.zeros((2, size, size, 3), np.uint8))  # warm-up
    results = {"model": encoder.model_id, "device": str(encoder.device),
               "dtype": str(encoder.dtype), "batch_size": args.batch_size,
               "torch_threads": torch.get_num_threads(), "videos": {}}
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        real = args.real_video
        if args.real_frames:
            real = cut_video(real, Path(tmp) / "real_cut.mp4", args.real_frames)
        videos["real"] = real
        videos["long"] = make_long_video(Path(tmp) / "long.mp4", args.long_seconds)
        for name, video in videos.items():
            e2e, n_frames = bench_e2e(video, encoder, args.batch_size, args.workers)
            bare = bench_bare(video, encoder, args.batch_size)
            naive = bench_naive(video, encoder, args.batch_size)
            results["videos"][name] = {
                "frames": n_frames, "features": len(range(4, n_frames, 8)),
                "e2e_fps": round(n_frames / e2e, 1), "bare_fps": round(n_frames / bare, 1),
                "naive_fps": round(n_frames / naive, 1),
                "e2e_vs_bare": round(e2e / bare, 3), "naive_vs_e2e": round(naive / e2e, 3),
            }
            print(name, json.dumps(results["videos"][name]), flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
