"""Produce the mAP@IoU golden values with VadCLIP's own, unchanged ``getDetectionMAP``.

Not run in CI. It writes fixed class predictions for a small real-format subset of the UCF-Crime
and XD-Violence test lists (``vadclip_map_{ucf,xd}.npz``: per video the ``[T, C]`` snippet
softmax in VadCLIP's column order, plus ``__classes__``), then imports VadCLIP's
``src/utils/{ucf,xd}_detectionMAP.py`` from the checkout given on the command line and records
what it returns in ``vadclip_map_golden.json``. Ground truth is built as VadCLIP's
``list/make_gt_mAP_{ucf,xd}.py`` build it (native frame spans, a label per segment, normal videos
one segment ``[0, T * 16]``), read here directly from the packaged annotation text files.

Usage (VadCLIP commit f643c9132adcc0ea2aa549568ab30c49a45f0159)::

    git clone https://github.com/nwpu-zxr/VadCLIP /tmp/VadCLIP
    python tests/lagovad/golden/make_vadclip_map_golden.py /tmp/VadCLIP
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "lagovad" / "eval" / "data"
REPEAT = 16
SEED = 20261129
# VadCLIP's class lists (their classlist / label_map order); 'A' is XD's normal code.
XD_CLASSES = ["A", "B1", "B2", "B4", "B5", "B6", "G"]
UCF_CLASSES = ["Normal", "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion",
               "Fighting", "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing",
               "Vandalism"]
MAX_END = 4000  # keep the subset small: abnormal videos whose spans end before this frame


def _official_order(name: str) -> list[tuple[str, str]]:
    """``(video key, class_name)`` in the official JSON order."""
    rows = json.loads((DATA / name / "test_annotations.json").read_text())
    return [(r["path"].rsplit("/", 1)[-1][: -len(".npy")], r["class_name"]) for r in rows]


def _xd_segments() -> dict[str, list[tuple[str, int, int]]]:
    out = {}
    for line in (DATA / "xd" / "annotations_multiclasses.txt").read_text().splitlines():
        parts = line.split()
        if parts:
            rest = parts[1:]
            # a few names carry ".mp4"; VadCLIP matches by substring, the feature name has none
            out[parts[0].removesuffix(".mp4")] = [(rest[j], int(rest[j + 1]), int(rest[j + 2]))
                             for j in range(0, len(rest), 3)]
    return out


def _ucf_segments() -> dict[str, list[tuple[str, int, int]]]:
    out = {}
    for line in (DATA / "ucf" / "Temporal_Anomaly_Annotation.txt").read_text().splitlines():
        parts = line.split()
        if parts and parts[1] != "Normal":  # normal lines carry -1 spans; their gt is built
            segs = [(parts[1], int(parts[2]), int(parts[3]))]
            if parts[4] != "-1":
                segs.append((parts[1], int(parts[4]), int(parts[5])))
            out[parts[0]] = segs
    return out


def _subset(name: str, segs: dict, per_class: int, n_normal: int) -> list[str]:
    chosen, counts, normals = [], {}, 0
    for video, cls in _official_order(name):
        if cls == "Normal":
            if normals < n_normal:
                chosen.append(video)
                normals += 1
            continue
        s = segs[video]
        multi = len(s) > 1
        if max(e for _, _, e in s) < MAX_END and (counts.get(cls, 0) < per_class or
                                                   (multi and counts.get(cls, 0) < per_class + 1)):
            chosen.append(video)
            counts[cls] = counts.get(cls, 0) + 1
    return chosen


def _predictions(videos: list[str], segs: dict, classes: list[str], normal: str,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noisy snippet softmax: segment classes raised around (jittered) true spans."""
    out = {}
    for v in videos:
        gt = segs.get(v, [])
        t = (-(-max(e for _, _, e in gt) // REPEAT) + int(rng.integers(2, 20)) if gt
             else int(rng.integers(40, 200)))
        logits = rng.standard_normal((t, len(classes)))
        n_col = classes.index(normal)
        logits[:, n_col] += 3.0  # Normal dominates wherever nothing happens
        if not gt:
            logits[:, n_col] += 2.0
            for _ in range(int(rng.integers(1, 3))):  # dips keep the Normal curve's range wide
                a = int(rng.integers(0, t))
                logits[a:a + int(rng.integers(3, 10)), n_col] -= 4.0
        for code, s, e in gt:
            a = max(s // REPEAT + int(rng.integers(-3, 4)), 0)
            b = min(max(-(-e // REPEAT) + int(rng.integers(-3, 4)), a + 1), t)
            logits[a:b, classes.index(code)] += 5.0
            logits[a:b, n_col] -= 3.0
        for _ in range(int(rng.integers(0, 3))):  # distractor bursts of a random class
            c, a = int(rng.integers(0, len(classes))), int(rng.integers(0, t))
            logits[a:a + int(rng.integers(2, 12)), c] += 2.0
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[v] = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def _load(vadclip: Path, module: str):
    spec = importlib.util.spec_from_file_location(module, vadclip / "src" / "utils" /
                                                  f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.getDetectionMAP


def _gt(videos, segs, preds, normal_label):
    segments, labels = [], []
    for v in videos:
        if v in segs:
            segments.append([[s, e] for _, s, e in segs[v]])
            labels.append([c for c, _, _ in segs[v]])
        else:  # as make_gt_mAP_*.py: one segment over the T * 16 predicted frames
            segments.append([[0, len(preds[v]) * REPEAT]])
            labels.append([normal_label])
    return segments, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vadclip", type=Path, help="VadCLIP checkout (nwpu-zxr/VadCLIP)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(args.vadclip), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    rng = np.random.default_rng(SEED)
    golden: dict = {"vadclip_repo": "nwpu-zxr/VadCLIP", "vadclip_commit": commit,
                    "repeat": REPEAT, "seed": SEED, "numpy": np.__version__,
                    "iou": [0.1, 0.2, 0.3, 0.4, 0.5], "units": "percent, as VadCLIP returns"}
    for name, segs, classes, normal, module, runs in (
            ("xd", _xd_segments(), XD_CLASSES, "A", "xd_detectionMAP", {"vadclip": "A"}),
            ("ucf", _ucf_segments(), UCF_CLASSES, "Normal", "ucf_detectionMAP",
             {"vadclip": "Normal", "vadclip-ucf-quirk": "A"})):
        videos = _subset(name, segs, per_class=2, n_normal=8)
        preds = _predictions(videos, segs, classes, normal, rng)
        np.savez_compressed(HERE / f"vadclip_map_{name}.npz", __classes__=np.array(classes),
                            **preds)
        get_map = _load(args.vadclip, module)
        frames = [np.repeat(preds[v].astype(np.float64), REPEAT, axis=0) for v in videos]
        golden[name] = {"videos": videos}
        for protocol, normal_label in runs.items():
            segments, labels = _gt(videos, segs, preds, normal_label)
            dmap, _ = get_map(frames, segments, labels, excludeNormal=False)
            golden[name][protocol] = [float(x) for x in dmap]
            print(name, protocol, np.round(dmap, 4), file=sys.stderr)
    (HERE / "vadclip_map_golden.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
