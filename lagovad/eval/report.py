"""Reports: Markdown tables like the paper's Table 2/3, JSON, CSV and PNG figures.

Every file is written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from lagovad import metrics
from lagovad.eval.benchmarks import BENCHMARKS, CLASSIFICATION_BENCHMARKS, DISPLAY_NAMES
from prevad import io as io_


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    io_.atomic_write_bytes(path, data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def detection_header(names: list[str]) -> list[str]:
    """Column names of the detection table (XD reports AP, the rest AUC)."""
    return ["Method"] + [f"{DISPLAY_NAMES.get(n, n)} {'AP' if n == 'xd' else 'AUC'}"
                         for n in names]


def markdown_tables(results: dict) -> str:
    """Markdown detection (Table 2 style) and classification (Table 3 style) rows.

    Args:
        results: The JSON-ready result dict of :func:`lagovad.eval.runner` (``method``,
            ``benchmarks: {name: {detection, classification?, localisation?}}``).
    """
    method = results["method"]
    # the seven in their usual order, then custom benchmarks (e.g. a generated world's split)
    names = [n for n in BENCHMARKS if n in results["benchmarks"]]
    names += [n for n in results["benchmarks"] if n not in BENCHMARKS]
    res = results["benchmarks"]
    lines = [f"Ground truth: {results['gt_resolution']} resolution"
             + (f" (scores repeated x{results['frame_repeat']})"
                if results["gt_resolution"] == "frame16" else "")
             + "; AP = step-wise average precision (sklearn); PR-AUC = trapezoid area.", ""]
    head = detection_header(names)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| " + " | ".join([method] + [_pct(res[n]["detection"][
        "ap" if n == "xd" else "auc"]) for n in names]) + " |")
    lines += ["", "| Method | Benchmark | AUC | AP | PR-AUC (trapezoid) | videos |",
              "|---|---|---|---|---|---|"]
    for n in names:
        d = res[n]["detection"]
        lines.append(f"| {method} | {DISPLAY_NAMES.get(n, n)} | {_pct(d['auc'])} | "
                     f"{_pct(d['ap'])} | "
                     f"{_pct(d['ap_trapezoid'])} | {d['n_videos']}/{d['n_expected']} |")
    cls = [n for n in CLASSIFICATION_BENCHMARKS if "classification" in res.get(n, {})]
    if cls:
        head = ["Method"] + [f"{DISPLAY_NAMES[n]} {m}" for n in cls for m in ("Acc", "F1")]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        vals = [_pct(res[n]["classification"][k]) for n in cls for k in ("accuracy", "macro_f1")]
        lines.append("| " + " | ".join([method] + vals) + " |")
    if cls:
        lines.append("\nF1 = " + res[cls[0]]["classification"].get("f1_convention", "macro F1")
                     + ".")
    loc = [n for n in CLASSIFICATION_BENCHMARKS if "localisation" in res.get(n, {})]
    if loc:
        first = res[loc[0]]["localisation"]
        keys = [k for k in first if k.startswith("mAP@")]
        lines += ["", f"Localisation protocol: {first.get('protocol', '?')} "
                      f"({first.get('reference', '')}); mAP over all classes incl. Normal.",
                  "", "| Method | Benchmark | " + " | ".join(keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for n in loc:
            lines.append(f"| {method} | {DISPLAY_NAMES[n]} | "
                         + " | ".join(_pct(res[n]["localisation"][k]) for k in keys) + " |")
    for n, why in results.get("skipped", {}).items():
        lines.append(f"\nSkipped {DISPLAY_NAMES.get(n, n)}: {why}.")
    return "\n".join(lines) + "\n"


def csv_rows(results: dict) -> str:
    """One CSV row per (benchmark, metric)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "benchmark", "task", "metric", "value", "gt_resolution", "protocol"])
    for n, r in results["benchmarks"].items():
        for task, vals in r.items():
            proto = vals.get("protocol", "")  # e.g. the localisation protocol (vadclip)
            for k, v in vals.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                    w.writerow([results["method"], n, task, k, v, results["gt_resolution"],
                                proto])
    return buf.getvalue()


def write_reports(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and ``results.md`` under ``out_dir``."""
    out = Path(out_dir)
    return {
        "json": atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n"),
        "csv": atomic_write_text(out / "results.csv", csv_rows(results)),
        "md": atomic_write_text(out / "results.md", markdown_tables(results)),
    }


def plot_curves(name: str, labels: np.ndarray, scores: np.ndarray, out_dir: str | Path) -> Path:
    """ROC and PR curves of pooled scores side by side (``<name>_curves.png``)."""
    fig = io_.new_figure(figsize=(9, 4))  # pyplot-free: the caller's backend is left alone
    ax1, ax2 = fig.subplots(1, 2)
    if 0 < labels.sum() < len(labels):
        fpr, tpr, _ = metrics.roc_curve(labels, scores)
        ax1.plot(fpr, tpr, label=f"AUC {100 * metrics.roc_auc(labels, scores):.2f}")
        ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    if labels.sum() > 0:
        p, r, _ = metrics.pr_curve(labels, scores)
        ax2.step(r, p, where="post",
                 label=f"AP {100 * metrics.average_precision(labels, scores):.2f}")
    for ax, (x, y) in ((ax1, ("FPR", "TPR")), (ax2, ("Recall", "Precision"))):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right" if ax is ax1 else "upper right")
    fig.suptitle(DISPLAY_NAMES.get(name, name))
    return io_.atomic_save_png(fig, Path(out_dir) / f"{name}_curves.png")


def plot_timelines(name: str, videos: list[tuple[str, np.ndarray, np.ndarray, float]],
                   out_dir: str | Path) -> Path:
    """Score timelines with shaded ground truth (``<name>_timelines.png``).

    Args:
        videos: ``(video, scores, gt, per-video AUC)`` rows, e.g. best and worst videos.
    """
    fig = io_.new_figure(figsize=(9, 1.8 * len(videos)))
    axes = fig.subplots(len(videos), 1, squeeze=False)
    for ax, (vid, s, g, auc) in zip(axes[:, 0], videos, strict=True):
        x = np.arange(len(s))
        ax.fill_between(x, 0, g, step="post", color="tab:red", alpha=0.2, label="ground truth")
        ax.plot(x, s, lw=1, label="score")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{vid}  (video AUC {100 * auc:.1f})", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return io_.atomic_save_png(fig, Path(out_dir) / f"{name}_timelines.png")
