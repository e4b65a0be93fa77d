"""`make quickstart`: the main job end to end on embedded defaults (no server, no downloads).

Runs on Prefect's embedded (temporary) server. Every step is a thin task over a library function:

1. create a PreVAD store and import the seven zero-shot benchmarks' real test annotations;
2. write a data card (tables + PNG plots) of what is stored;
3. add a synthetic PreVAD-style training set (planted anomaly directions, labelled "synthetic");
4. train ``lagovad-tiny`` on it (checkpoint = safetensors + JSON);
5. evaluate the checkpoint zero-shot on TAD's real spans with synthetic planted features;
6. extract CLIP features from a real video (or a synthesised one) and run ``detect`` under a
   user definition, writing scores, intervals and a plot.

Steps 3-6 use the tiny CLIP with seeded random weights because no weights can be downloaded:
the numbers show the chain works, not what a trained ViT-B/16 model scores. For real runs use
`lagovad extract --pretrained`, `lagovad train --model lagovad-b16` and `lagovad eval`.

Usage: ``python -m flows.quickstart --out runs/quickstart [--video FILE] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task

from lagovad.eval.benchmarks import BENCHMARKS, annotation_file, load_benchmark
from lagovad.synthetic import DEFAULT_DESCRIPTIONS, class_directions, write_benchmark_features
from prevad import queries
from prevad.io import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEO = REPO_ROOT.parent / "shared" / "benchmarks" / "videos" / "Robbery102_x264.mp4"
DEMO_MODEL = "lagovad-tiny"
SYNTHETIC_SPLITS = queries.SYNTHETIC_SPLITS
DEMO_DEFINITION = ("Robbery", "A man points a gun at a shop assistant and takes the money.")


@task
def init_store(root: Path) -> str:
    """Create (or reopen) the store."""
    from prevad import Store

    return str(Store.init(root).root)


@task
def import_benchmarks(root: Path) -> dict[str, dict[str, int]]:
    """Import the packaged real test annotations of the seven benchmarks (idempotent)."""
    from prevad import Store, dataset_counts
    from prevad.interop import import_benchmark

    store = Store(root)
    for name in BENCHMARKS:
        import_benchmark(store, name, annotation_file(name))
    return {row["dataset"]: {"videos": row["videos"], "abnormal": row["abnormal"]}
            for row in dataset_counts(store).to_pylist()}


@task
def write_card(root: Path, out: Path) -> str:
    """Data card of the store: Markdown tables and PNG plots."""
    from prevad import Store
    from prevad.card import write_card as _write_card

    return str(_write_card(Store(root), out, title="Quick-start store"))


@task
def add_synthetic_training_set(root: Path, dim: int) -> dict[str, int]:
    """Synthetic PreVAD-style train/val/test videos with planted anomalies (source 'synthetic')."""
    from lagovad.synthetic import populate_store
    from prevad import Store

    store = Store(root)
    if not store.query(SYNTHETIC_SPLITS).num_rows:
        populate_store(store, dim=dim)
    return {row["split"]: row["n"] for row in store.query(SYNTHETIC_SPLITS).to_pylist()}


@task
def train_model(root: Path, out: Path, epochs: int) -> str:
    """Train lagovad-tiny on the synthetic split; returns the last checkpoint folder."""
    from lagovad.synthetic import SYNTHETIC_MODEL_ID
    from lagovad.train import TrainConfig, resolve_resume, train

    cfg = TrainConfig(store=str(root), out=str(out), model=DEMO_MODEL, epochs=epochs,
                      batch_size=16, lr=2e-3, warmup_steps=5, seed=2024, device="auto",
                      dataset="prevad", feature_model=SYNTHETIC_MODEL_ID, progress=False,
                      # the authors' undetached contrastive pooling wrecks detection on these
                      # small synthetic features (planted TAD AUC 0.15 without, 0.9996 with)
                      detach_pool=True)
    train(cfg)
    return str(resolve_resume(out))  # the last epoch's checkpoint folder


@task
def evaluate_planted(checkpoint: Path, features_dir: Path, out: Path, dim: int) -> dict:
    """Zero-shot TAD evaluation on synthetic features planted at TAD's real anomaly spans."""
    import lagovad
    from lagovad.eval import runner
    from lagovad.eval.sources import feature_source

    bench = load_benchmark("tad")
    rng = np.random.default_rng(0)
    direction = class_directions(list(DEFAULT_DESCRIPTIONS), dim)["Explosion"]
    entries = [(v.name, v.spans, int(rng.integers(64, 256))) for v in bench.videos]
    write_benchmark_features(entries, features_dir, direction)
    device = runner.pick_device(None)
    model, _ = lagovad.load_checkpoint(checkpoint, device=device)
    scorer = runner.ModelScorer(model, device, "descriptions", 16)

    def score(b, defn):
        return scorer.score(b, defn, feature_source(features_dir, b).loaders)

    results = runner.run(["tad"], score, "LaGoVAD-tiny (synthetic planted features)",
                         out_dir=out)
    return results["benchmarks"]["tad"]["detection"]


@task
def detect_video(root: Path, checkpoint: Path, video: Path, out: Path) -> dict:
    """Extract features (cached in the store) and score the video under a user definition."""
    from lagovad import AnomalyDefinition
    from lagovad.detect import detect, encoder_for, load_detector, write_outputs
    from prevad import Store

    model, label = load_detector(checkpoint=checkpoint)
    encoder = encoder_for(model)
    definition = AnomalyDefinition.from_strings(list(DEMO_DEFINITION))
    det = detect(video, definition, model, encoder, checkpoint=label,
                 store=Store(root))
    files = write_outputs(det, out)
    return {"video": str(video), "steps": len(det.anomaly_scores),
            "max_score": float(det.anomaly_scores.max()), "intervals": len(det.intervals),
            "files": {k: str(v) for k, v in files.items()}}


@task
def synthesise_video(path: Path) -> str:
    """A 10 s, 25 fps video with a moving square (used when no real video is at hand)."""
    from lagovad.video import write_video

    def frame(i: int) -> np.ndarray:
        img = np.full((96, 128, 3), 40, np.uint8)
        x = (i * 3) % 96
        img[30:62, x : x + 32] = (230, 60, 60) if 100 <= i < 150 else (200, 200, 200)
        return img

    path.parent.mkdir(parents=True, exist_ok=True)
    return str(write_video(path, 250, frame, fps=25))


@flow(name="lagovad-quickstart", log_prints=True)
def quickstart(out: str = "runs/quickstart", video: str | None = None, epochs: int = 12) -> dict:
    """The main job: store, benchmarks, card, training, evaluation, detection."""
    from lagovad import get_model_config

    log = get_run_logger()
    out_dir = Path(out).resolve()
    root = out_dir / "store"
    dim = int(get_model_config(DEMO_MODEL)["video_dim"])

    init_store(root)
    counts = import_benchmarks(root)
    log.info("benchmarks imported (videos / abnormal): %s", counts)
    card = write_card(root, out_dir / "data_cards" / "quickstart.md")
    log.info("data card: %s", card)
    synthetic = add_synthetic_training_set(root, dim)
    log.info("synthetic training set (videos per split): %s", synthetic)
    checkpoint = Path(train_model(root, out_dir / "train", epochs))
    log.info("checkpoint: %s", checkpoint)
    det = evaluate_planted(checkpoint, out_dir / "features" / "tad", out_dir / "eval", dim)
    log.info("TAD (synthetic planted features) AUC = %.4f", det["auc"])
    if video is None:
        real = SHARED_VIDEO if SHARED_VIDEO.is_file() else None
        video = str(real) if real else synthesise_video(out_dir / "videos" / "moving_square.mp4")
    detection = detect_video(root, checkpoint, Path(video), out_dir / "detect")
    log.info("detect: %s", detection)
    summary = {"benchmarks": counts, "card": card, "synthetic": synthetic,
               "checkpoint": str(checkpoint), "eval_tad_synthetic": det, "detect": detection}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--video", default=None, help="video to run detect on")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quickstart(out=args.out, video=args.video, epochs=args.epochs)


if __name__ == "__main__":
    main()
