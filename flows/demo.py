"""`make demo`: the PreVAD curation chain end to end on embedded defaults (no internet, no GPU).

On Prefect's embedded server, each step a thin task or flow over the library:

1. a store with the seven benchmarks' real test annotations imported (and its data card);
2. retrieval over the real MSR-VTT 1k-A captions (``../shared/corpora``) with the packaged dense
   text encoder;
3. a media server on 127.0.0.1 serving a generated video for every retrieved MSR-VTT id, the
   real ``Robbery102_x264.mp4`` and an HLS stream; acquisition (yt-dlp) and stream recording
   (ffmpeg) fetch from it;
4. cleaning (PySceneDetect), then describe / verify / judge on tiny random-weight Qwen2-VL and
   Qwen2 models built locally (:mod:`curation.engines.tiny`), so their words are noise: the
   demo shows the chain, not what real models say;
5. review through the Label Studio JSON file round trip, the demo accepting every pre-label as
   reviewer ``demo-auto-accept`` (stored as that annotator);
6. CLIP features (tiny random CLIP) and a short training of ``lagovad-tiny`` on the
   human-confirmed labels when they hold both normal and abnormal videos (a random judge labels
   every video alike, so the demo says why it skips it);
7. the quick-start's learnable part: a synthetic set with planted anomalies, trained on and
   evaluated zero-shot on TAD's real spans; the data card of the curated store.

Usage: ``python -m flows.demo --out runs/demo``. It prints where every output is and how to open
the Prefect UI on its runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Prefect reads this when it is imported: the embedded server can take longer than the default
# 20 s to start on a loaded 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import numpy as np  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402

from flows.curate import curate, retrieve_task  # noqa: E402
from flows.lagovad_flows import train_flow  # noqa: E402
from flows.quickstart import (  # noqa: E402
    add_synthetic_training_set,
    evaluate_planted,
    import_benchmarks,
    init_store,
    train_model,
)
from flows.stage_flow import data_card_task  # noqa: E402
from prevad.io import atomic_write_json  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CORPUS = SHARED / "corpora" / "msrvtt_1kA_test.csv"
REAL_VIDEO = SHARED / "benchmarks" / "videos" / "Robbery102_x264.mp4"
AUTO_REVIEWER = "demo-auto-accept"
DEMO_MODEL = "lagovad-tiny"
CLIP_TINY = "lagovad-clip-tiny"
#: Few, clearly matching candidates: one per category at most, similarity >= 0.5.
RETRIEVE = {"method": "dense", "top_k": 1, "min_score": 0.5}
FRAMES = {"frames": 2, "frame_size": 56}
#: Weights seed of the tiny judge. A random model gives the same answer to every prompt; with
#: seed 0 that answer contradicts itself (anomaly=true, category Normal) and the judge rejects
#: every video, so nothing would reach review. With seed 4 the answer is self-consistent
#: (anomaly, Explosion) - still noise, but the chain downstream gets input.
JUDGE_SEED = 4
#: Candidates of these sources are served as generated videos.
GENERATED_SOURCES = ("msrvtt",)
CANDIDATE_IDS = "SELECT source, source_video_id FROM candidates WHERE source = $source::VARCHAR"
HUMAN_LABELS = """
SELECT split, count(*) AS n, count(*) FILTER (WHERE is_anomaly) AS abnormal
FROM annotations WHERE dataset = 'prevad' AND annotator_kind = 'human'
  AND annotator = $annotator::VARCHAR
GROUP BY split ORDER BY split
"""


# ---------------------------------------------------------------------------- tasks
@task
def build_models(folder: Path) -> dict[str, str]:
    """Tiny random-weight Qwen2-VL (describe, verify) and Qwen2 (judge) models, built once."""
    from curation.engines.tiny import build_tiny_llm, build_tiny_vlm

    vlm, llm = folder / "tiny-qwen2-vl", folder / f"tiny-qwen2-seed{JUDGE_SEED}"
    if not (vlm / "config.json").is_file():
        build_tiny_vlm(vlm)
    if not (llm / "config.json").is_file():
        build_tiny_llm(llm, seed=JUDGE_SEED)
    return {"vlm": str(vlm), "llm": str(llm)}


def _clip_frames(seed: int, n: int, h: int = 64, w: int = 96):
    """A blocky scene with a moving bar (real motion, one shot)."""
    rng = np.random.default_rng(seed)
    bg = np.kron(rng.integers(30, 220, size=(h // 8, w // 8, 3), dtype=np.uint8),
                 np.ones((8, 8, 1), np.uint8))

    def frame(i: int) -> np.ndarray:
        img = bg.copy()
        x = (i * 3) % (w - 10)
        img[h // 3:h // 3 + 16, x:x + 10] = 250
        return img

    return frame


@task
def prepare_media(root: Path, media: Path) -> dict[str, Any]:
    """Videos for the retrieved ids, the real test video and an HLS stream under ``media``."""
    from curation.ffmpeg import ffmpeg_path
    from lagovad.video import write_video
    from prevad import Store

    store = Store(root)
    n = 0
    for source in GENERATED_SOURCES:
        for row in store.query(CANDIDATE_IDS, {"source": source}).to_pylist():
            path = media / source / f"{row['source_video_id']}.mp4"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(path, 30, _clip_frames(n, 30), fps=10, lossless=False,
                            faststart=True)
            n += 1
    real = media / "ucf" / REAL_VIDEO.name
    if REAL_VIDEO.is_file() and not real.is_file():
        real.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_VIDEO, real)
    live = media / "live"
    if not (live / "index.m3u8").is_file():
        live.mkdir(parents=True, exist_ok=True)
        src = write_video(live / "source.mp4", 60, _clip_frames(999, 60), fps=10,
                          lossless=False)
        subprocess.run([str(ffmpeg_path()), "-hide_banner", "-loglevel", "error", "-y", "-i",
                        str(src), "-c", "copy", "-f", "hls", "-hls_time", "1",
                        "-hls_list_size", "0", str(live / "index.m3u8")],
                       check=True, timeout=120)
    return {"generated": n, "real": str(real) if real.is_file() else None,
            "stream": "live/index.m3u8"}


@task
def human_labels(root: Path) -> list[dict[str, Any]]:
    """The demo reviewer's labels per split (what training uses)."""
    from prevad import Store

    return Store(root).query(HUMAN_LABELS, {"annotator": AUTO_REVIEWER}).to_pylist()


def train_curated(root: Path, out: Path, labels: list[dict[str, Any]], epochs: int
                  ) -> dict[str, Any]:
    """Train lagovad-tiny on the human-confirmed labels, when they hold both kinds of video.

    Training synthesises videos from abnormal and normal ones. A random-weight judge gives the
    same verdict to every video, so the demo's curated labels may hold only one kind; then this
    says so instead of training (with real models the judge tells normal from abnormal).
    """
    n = sum(r["n"] for r in labels if r["split"] == "train")
    abnormal = sum(r["abnormal"] for r in labels if r["split"] == "train")
    if not abnormal or abnormal == n:
        reason = (f"the {n} human-confirmed train videos are all "
                  f"{'abnormal' if abnormal else 'normal'}; training needs both")
        get_run_logger().warning("training on the curated store skipped: %s", reason)
        return {"skipped": reason}
    return train_flow(str(root), str(out), model=DEMO_MODEL, epochs=epochs, batch_size=8,
                      lr=2e-3, dataset="prevad", val_split="", device="cpu",
                      options={"labels": "human", "warmup_steps": 2, "progress": False})


# ---------------------------------------------------------------------------- the flow
@flow(name="lagovad-demo", log_prints=True)
def demo(out: str = "runs/demo", corpus: str = str(CORPUS), epochs: int = 2,
         retrieve: dict[str, Any] | None = None, stream_seconds: float = 3.0,
         synthetic_epochs: int = 12) -> dict[str, Any]:
    """The curation chain on embedded defaults (see the module docstring).

    Args:
        out: output folder (store, media, models, review files, checkpoints, evaluation).
        corpus: caption corpus file (default: the real MSR-VTT 1k-A captions).
        epochs: training epochs on the curated store.
        synthetic_epochs: training epochs on the synthetic planted set.
        retrieve: retrieval settings (default :data:`RETRIEVE`).
        stream_seconds: seconds of the HLS stream to record.

    Returns:
        Summary of every step (also written to ``<out>/summary.json``).
    """
    from curation.media_server import MediaServer
    from lagovad import get_model_config

    log = get_run_logger()
    out_dir = Path(out).resolve()
    root, media, bench = out_dir / "store", out_dir / "media", out_dir / "benchmarks"
    media.mkdir(parents=True, exist_ok=True)
    # the benchmarks' test annotations live in their own store: their videos have no files
    # here, and the curation stages work on every video of a store
    init_store(bench)
    summary: dict[str, Any] = {"benchmarks": import_benchmarks(bench)}
    summary["benchmarks_card"] = data_card_task(str(bench), title="Zero-shot benchmarks")
    init_store(root)
    models = build_models(out_dir / "models")
    summary["retrieve"] = retrieve_task(str(root), corpus, retrieve or RETRIEVE)
    summary["media"] = prepare_media(root, media)
    vlm = {"engine": "transformers", "model": models["vlm"], "device": "cpu", "batch_size": 4,
           "max_tokens": 96}
    params = {
        "record": {"io_timeout_s": 15.0},
        "describe": {**vlm, **FRAMES, "min_chars": 4, "max_chars": 40},
        "verify": {**vlm, **FRAMES, "min_score": 0.0, "min_clip_mean": None,
                   "clip_model": CLIP_TINY, "clip_pretrained": None,
                   "max_claims": 2, "max_claim_chars": 8},
        "judge": {**vlm, "model": models["llm"], "require_verified": False,
                  "max_reason_chars": 40},
    }
    with MediaServer(media) as server:
        params["acquire"] = {"url_template": server.base_url + "/{source}/{source_video_id}.mp4",
                             "retries": 1, "backoff_s": 0.2}
        real = summary["media"]["real"]
        summary["curate"] = curate(
            str(root), steps=["acquire", "record", "clean", "describe", "verify", "judge",
                              "review", "features"],
            video_urls=[server.url("ucf/" + Path(real).name)] if real else [],
            streams=[server.url(summary["media"]["stream"])], stream_seconds=stream_seconds,
            params=params, auto_accept=AUTO_REVIEWER, default_split="train",
            features={"model": CLIP_TINY, "pretrained": "none", "device": "cpu",
                      "batch_size": 16, "workers": 1},
            engine="local", retries=0, card=False)
    summary["human_labels"] = human_labels(root)
    log.info("labels accepted by %s: %s", AUTO_REVIEWER, summary["human_labels"])
    summary["train"] = train_curated(root, out_dir / "train", summary["human_labels"], epochs)
    # the planted-anomaly tour of `make quickstart`: a synthetic PreVAD-style set (in the
    # benchmarks store) that a model can learn, evaluated zero-shot on TAD's real spans
    dim = int(get_model_config(DEMO_MODEL)["video_dim"])
    summary["synthetic"] = add_synthetic_training_set(bench, dim)
    checkpoint = Path(train_model(bench, out_dir / "train-synthetic", synthetic_epochs))
    summary["eval_tad_planted"] = evaluate_planted(checkpoint, out_dir / "features" / "tad",
                                                   out_dir / "eval", dim)
    log.info("TAD (planted features) AUC = %.4f", summary["eval_tad_planted"]["auc"])
    summary["card"] = data_card_task(str(root), title="PreVAD demo curation")
    summary["outputs"] = {
        "store": str(root), "benchmarks_store": str(bench), "media": str(media),
        "models": str(out_dir / "models"),
        "review_tasks": summary["curate"]["steps"]["review"]["export"]["tasks"],
        "review_config": summary["curate"]["steps"]["review"]["export"]["label_config"],
        "checkpoint": summary["train"].get("checkpoint"),
        "checkpoint_synthetic": str(checkpoint), "evaluation": str(out_dir / "eval"),
        "data_card": summary["card"], "summary": str(out_dir / "summary.json"),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    """Where every output is, and how to see the runs in the Prefect UI."""
    lines = ["", "PreVAD demo finished. Outputs:"]
    lines += [f"  {k:<14} {v}" for k, v in summary["outputs"].items()]
    lines += ["", "Query the store:  prevad curate status " + summary["outputs"]["store"],
              "Prefect UI on these runs (stored in $PREFECT_HOME, default ~/.prefect):",
              "  prefect server start --host 127.0.0.1   # then open http://127.0.0.1:4200/runs"]
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    print(report(demo(out=args.out, corpus=args.corpus, epochs=args.epochs)))


if __name__ == "__main__":
    main()
