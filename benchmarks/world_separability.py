"""Can the demo's tiny random-weight CLIP tell the world's planted events from normal frames?

Generates a world (or reads one), extracts frame features of its decoded videos exactly as the
demo does (``lagovad extract``: ``lagovad-clip-tiny``, random weights, stride 8, 32x32 frames),
labels every sampled frame from the truth table (the event's top-level class when the frame lies
in the event, else Normal; frames at the event's eased edges are reported apart) and measures,
with 5-fold cross-validation grouped by video (no video in both folds):

- per top-level class, event frames against normal frames: nearest-centroid and logistic-probe
  accuracy on balanced classes;
- all eight labels at once (Normal + 7): nearest-centroid and logistic-probe accuracy.

Nothing is planted in feature space: the features come from the decoded H.264 files.

Usage: ``python benchmarks/world_separability.py [--videos 300] [--world DIR] [--out FILE.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frame_labels(world: Path, features: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          np.ndarray]:
    """(features [N, D], top-level label per frame, video index, full-strength flag)."""
    from curation.world import load_truth
    from curation.world.media import EVENT_FADE

    truth = load_truth(world)
    xs, labels, groups, full = [], [], [], []
    for g, (wid, row) in enumerate(sorted(truth.items())):
        path = features / f"{wid}.npy"
        if row["broken"] or not path.is_file():
            continue
        arr = np.load(path)
        for k in range(len(arr)):
            f = 4 + 8 * k  # the extraction's sampled frame (stride 8, offset 4)
            label, strong = "Normal", True
            for a, b in row["anomaly_frames"]:
                if a <= f < b:
                    label = row["top_level"]
                    strong = a + EVENT_FADE <= f < b - EVENT_FADE
            xs.append(arr[k])
            labels.append(label)
            groups.append(g)
            full.append(strong)
    return np.stack(xs), np.array(labels), np.array(groups), np.array(full)


def _ncc(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray) -> np.ndarray:
    classes = np.unique(ytr)
    cents = np.stack([xtr[ytr == c].mean(0) for c in classes])
    d = ((xte[:, None, :] - cents[None]) ** 2).sum(-1)
    return classes[d.argmin(1)]


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5,
                   balance: bool = False, seed: int = 0) -> dict[str, float]:
    """Grouped k-fold accuracy of nearest centroid and a logistic probe (standardised inputs)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    if balance:  # as many frames of each class (the rarer one's count)
        keep = []
        n = min(np.sum(y == c) for c in np.unique(y))
        for c in np.unique(y):
            keep.extend(rng.permutation(np.flatnonzero(y == c))[:n])
        keep = np.sort(np.array(keep))
        x, y, groups = x[keep], y[keep], groups[keep]
    ids = rng.permutation(np.unique(groups))
    fold_of = {int(g): i % folds for i, g in enumerate(ids)}
    fold = np.array([fold_of[int(g)] for g in groups])
    hits = {"nearest_centroid": 0, "logistic": 0}
    total = 0
    for k in range(folds):
        tr, te = fold != k, fold == k
        if not te.any() or len(np.unique(y[tr])) < len(np.unique(y)):
            continue
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        xtr, xte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        hits["nearest_centroid"] += int((_ncc(xtr, y[tr], xte) == y[te]).sum())
        probe = LogisticRegression(max_iter=3000).fit(xtr, y[tr])
        hits["logistic"] += int((probe.predict(xte) == y[te]).sum())
        total += int(te.sum())
    return {k: round(v / max(total, 1), 4) for k, v in hits.items()} | {"frames": total}


def probe_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, test: np.ndarray) -> float:
    """Frame AUC on the test videos of a logistic probe trained on the corpus videos' frames.

    The best a frame-wise linear read-out of these features does on the held-out split: an
    upper bound of sorts for a detector trained on the same features with weaker labels.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tr = ~test
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    probe = LogisticRegression(max_iter=3000).fit((x[tr] - mu) / sd, y[tr] != "Normal")
    p = probe.predict_proba((x[test] - mu) / sd)[:, 1]
    return round(float(roc_auc_score(y[test] != "Normal", p)), 4)


def measure(world: Path, features: Path) -> dict:
    """Every separability figure of a world whose features are in ``features``."""
    from curation.world import load_truth
    from curation.world.media import PATTERNS

    x, y, groups, full = frame_labels(world, features)
    ids = sorted(load_truth(world))
    test = np.array([ids[g].startswith("t") for g in groups])
    out: dict = {"frames": int(len(y)), "event_frames": int((y != "Normal").sum()),
                 "per_class": {}, "all": {}}
    normal = y == "Normal"
    for top, pattern in PATTERNS.items():
        ev = y == top
        if ev.sum() < 10:
            continue
        row = {"pattern": pattern, "event_frames": int(ev.sum())}
        for name, mask in (("all_event_frames", ev | normal), ("full_strength", (ev & full)
                                                                | normal)):
            yy = np.where(y[mask] == top, "event", "normal")
            row[name] = cross_validate(x[mask], yy, groups[mask], balance=True)
        out["per_class"][top] = row
    out["all"] = cross_validate(x, y, groups)
    if test.any() and (~test).any():
        out["probe_test_auc"] = probe_auc(x, y, groups, test)
    return out


def main() -> None:
    """Generate (or read) a world, extract its features, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world", type=Path, help="an existing world (else one is generated)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "world_separability.json")
    args = parser.parse_args()
    from curation.world import generate_world
    from lagovad.extract import extract
    from lagovad.image_encoder import load_image_encoder

    with tempfile.TemporaryDirectory() as tmp:
        world = args.world or Path(tmp) / "world"
        t0 = time.perf_counter()
        if args.world is None:
            generate_world(world, args.videos, seed=args.seed, progress=True)
        encoder = load_image_encoder("lagovad-clip-tiny", None, device="cpu")
        feats = Path(tmp) / "features"
        extract([world / "media" / "videos", world / "test" / "videos"], encoder,
                out_dir=feats, batch_size=64, progress=True)
        result = measure(world, feats)
        result["world"] = {"videos": args.videos, "seed": args.seed, "profile": "default",
                           "encoder": "open_clip:lagovad-clip-tiny:random (seed 0)",
                           "sampling": "stride 8, offset 4, 32x32 frames"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"frames {result['frames']} (event {result['event_frames']}); 8-way "
          f"{result['all']}; held-out frame AUC of a linear probe "
          f"{result.get('probe_test_auc')}")
    for top, row in result["per_class"].items():
        print(f"{top:26s} {row['pattern']:14s} all {row['all_event_frames']} "
              f"full {row['full_strength']}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
