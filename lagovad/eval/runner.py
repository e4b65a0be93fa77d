"""Run an evaluation: score benchmark videos with a model (or read scores) and compute metrics.

Model inference is full-length: each video's features are cut into non-overlapping chunks of
the model's ``max_len`` steps (the last one shorter, padded and masked); chunks of several videos
are batched together; the per-step outputs are concatenated back in order. The definition's text
features are encoded once per benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lagovad.eval import protocol, report
from lagovad.eval.benchmarks import (
    CLASSIFICATION_BENCHMARKS,
    Benchmark,
    Definition,
    EvalError,
    load_benchmark,
    load_definition,
    load_native,
)
from lagovad.eval.protocol import VideoScores
from lagovad.labels import spans_to_mask

PROMPT_MODES = ("descriptions", "names")


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def definition_texts(defn: Definition, prompts: str = "descriptions",
                     ) -> tuple[list[str], list[list[int]], str]:
    """Texts to encode and, per class (Normal first), the text columns that belong to it.

    ``descriptions``: the shared Normal prompt plus every class's 1-6 descriptions (a class's
    similarity is the mean over its descriptions). ``names``: ``Normal`` plus the class names.

    Returns:
        ``(texts, columns, kind)`` with ``kind`` for ``AnomalyDefinition.from_strings``.
    """
    if prompts == "names":
        return ["Normal", *defn.classes], [[i] for i in range(len(defn.classes) + 1)], "names"
    if prompts != "descriptions":
        raise EvalError(f"prompts must be one of {PROMPT_MODES}, got {prompts!r}")
    texts, columns = [defn.normal], [[0]]
    for c in defn.classes:
        start = len(texts)
        texts += list(defn.descriptions[c])
        columns.append(list(range(start, len(texts))))
    return texts, columns, "descriptions"


def classification_view(defn: Definition, sims: np.ndarray) -> np.ndarray:
    """Columns of ``sims`` (definition classes, Normal first) in classification order."""
    order = ["Normal", *defn.classes]
    return sims[:, [order.index(c) for c in defn.classification_classes]]


def _reduce_columns(logits: np.ndarray, columns: list[list[int]]) -> np.ndarray:
    return np.stack([logits[:, cols].mean(axis=1) for cols in columns], axis=1)


@dataclass
class _Pending:
    parts: dict[str, list] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)


class ModelScorer:
    """Scores benchmark features with a LaGoVAD model (full length, chunked, batched).

    Args:
        model: A LaGoVAD model (``lagovad.create_model`` / ``lagovad.load_checkpoint``).
        device: Torch device.
        prompts: ``descriptions`` (official offline protocol) or ``names``.
        batch_size: Chunks per forward pass.
    """

    def __init__(self, model, device: torch.device, prompts: str = "descriptions",
                 batch_size: int = 16):
        self.model = model.to(device).eval()
        self.device = device
        self.prompts = prompts
        self.batch_size = max(int(batch_size), 1)
        self.max_len = int(model.config["max_len"])
        self.dim = int(model.config["video_dim"])

    @torch.no_grad()
    def text_features(self, defn: Definition) -> tuple[torch.Tensor, list[list[int]]]:
        """Encode the definition once: ``([C', H] text features, class columns)``."""
        from lagovad.definition import AnomalyDefinition

        texts, columns, kind = definition_texts(defn, self.prompts)
        adef = AnomalyDefinition.from_strings(texts, kind=kind)
        if adef.texts != texts:  # the Normal entry must stay first, order unchanged
            raise EvalError(f"definition texts were reordered: {adef.texts[:3]}...")
        return self.model.encode_definition(adef).to(self.device), columns

    @torch.no_grad()
    def _flush(self, batch: list[tuple[str, int, np.ndarray]], text: torch.Tensor,
               pending: _Pending, columns: list[list[int]]) -> None:
        lengths = [len(a) for _, _, a in batch]
        video = torch.zeros(len(batch), max(lengths), self.dim, device=self.device)
        mask = torch.zeros(len(batch), max(lengths), dtype=torch.bool, device=self.device)
        for i, (_, _, arr) in enumerate(batch):
            video[i, : len(arr)] = torch.from_numpy(arr).to(self.device)
            mask[i, : len(arr)] = True
        out = self.model(video, mask, text=text)
        probs = torch.sigmoid(out.frame_logits.float()).cpu().numpy()
        sims = out.class_logits.float().cpu().numpy()
        for i, (name, k, _) in enumerate(batch):
            n = lengths[i]
            pending.parts[name][k] = (probs[i, :n], _reduce_columns(sims[i, :n], columns))

    def score(self, bench: Benchmark, defn: Definition,
              features: dict[str, Callable[[], np.ndarray]], progress: bool = True,
              ) -> dict[str, VideoScores]:
        """Score every video in ``features``; returns ``{video: VideoScores}``."""
        text, columns = self.text_features(defn)
        pending, batch, done = _Pending(), [], {}

        def collect() -> None:
            finished = [n for n, ps in pending.parts.items() if all(p is not None for p in ps)]
            for name in finished:
                parts = pending.parts.pop(name)
                done[name] = VideoScores(np.concatenate([p[0] for p in parts]),
                                         np.concatenate([p[1] for p in parts]))

        for name, load in tqdm(features.items(), desc=f"{bench.name}", unit="video",
                               disable=not progress, leave=False):
            arr = load()
            if arr.ndim != 2 or arr.shape[1] != self.dim or len(arr) == 0:
                raise EvalError(f"features of {name} must be [T>=1, {self.dim}] for this model, "
                                f"got {arr.shape}")
            chunks = [arr[i: i + self.max_len] for i in range(0, len(arr), self.max_len)]
            pending.parts[name] = [None] * len(chunks)
            for k, c in enumerate(chunks):
                batch.append((name, k, np.ascontiguousarray(c, dtype=np.float32)))
                if len(batch) >= self.batch_size:
                    self._flush(batch, text, pending, columns)
                    batch = []
                    collect()
        if batch:
            self._flush(batch, text, pending, columns)
        collect()
        return done


def evaluate_scores(bench: Benchmark, defn: Definition, scores: dict[str, VideoScores],
                    resolution: str = "feature", repeat: int = 16,
                    frames: dict[str, int] | None = None, native: bool = False,
                    out_dir: Path | None = None, n_timelines: int = 3,
                    localisation: str = "vadclip") -> dict:
    """All metrics of one benchmark from per-video scores; writes figures when ``out_dir``.

    Class scores of ``scores`` come in definition order (Normal, then ``defn.classes``);
    classification and localisation (UCF/XD) use them in ``defn.classification_classes`` order.
    """
    det = protocol.evaluate_detection(bench, {k: v.anomaly for k, v in scores.items()},
                                      resolution, repeat, frames, native)
    res: dict = {"detection": det.as_dict()}
    has_sims = scores and all(v.class_sims is not None for v in scores.values())
    if has_sims and bench.name in CLASSIFICATION_BENCHMARKS:
        view = {k: VideoScores(v.anomaly, classification_view(defn, v.class_sims), v.class_kind)
                for k, v in scores.items()}
        res["classification"] = protocol.evaluate_classification(
            bench, defn, {k: v.class_sims for k, v in view.items()})
        res["localisation"] = protocol.evaluate_localisation(bench, defn, view, repeat,
                                                             localisation)
    if out_dir is not None:
        figs = Path(out_dir) / "figures"
        report.plot_curves(bench.name, det.labels, det.scores, figs)
        ranked = sorted(det.per_video_auc.items(), key=lambda kv: -kv[1])
        picks = ranked[:n_timelines] + ranked[-n_timelines:] if len(ranked) > n_timelines \
            else ranked
        if picks:
            rows = [(n, scores[n].anomaly, spans_to_mask(bench.video(n).spans,
                                                         len(scores[n].anomaly)), auc)
                    for n, auc in dict(picks).items()]
            report.plot_timelines(bench.name, rows, figs)
    return res


def run(names: Iterable[str], scorer: Callable[[Benchmark, Definition], dict[str, VideoScores]],
        method: str, resolution: str = "feature", repeat: int = 16, native: bool = False,
        annotations: dict[str, Path] | None = None, frames: dict[str, int] | None = None,
        out_dir: Path | None = None, localisation: str = "vadclip",
        definitions: dict[str, Path] | None = None) -> dict:
    """Evaluate several benchmarks with one scorer and return the JSON-ready results.

    Args:
        names: Benchmarks.
        scorer: ``(benchmark, definition) -> {video: VideoScores}``.
        method: Row label in the tables.
        resolution: ``feature`` (official) or ``frame16``.
        repeat: Frames per score for ``frame16``.
        native: Use native frame annotations (UCF/XD, ``frame16`` only).
        annotations: Per-benchmark JSON overrides.
        frames: Known frame counts per video (``frame16`` only).
        out_dir: Where reports and figures go (None: nothing written).
        localisation: mAP@IoU protocol (``protocol.LOCALISATION_PROTOCOLS``).
        definitions: Per-benchmark definition JSON overrides (a custom benchmark needs one).
    """
    results: dict = {"method": method, "gt_resolution": resolution, "frame_repeat": repeat,
                     "annotation_source": "native" if native else "json",
                     "localisation_protocol": localisation, "benchmarks": {},
                     "timing": {}}
    for name in names:
        ann = (annotations or {}).get(name)
        bench = load_native(name) if native else load_benchmark(name, ann)
        defn = load_definition(name, (definitions or {}).get(name))
        t0 = time.perf_counter()
        scores = scorer(bench, defn)
        t1 = time.perf_counter()
        if not scores:  # only possible with --allow-missing
            results.setdefault("skipped", {})[name] = "no features or scores for any video"
            continue
        results["benchmarks"][name] = evaluate_scores(bench, defn, scores, resolution, repeat,
                                                      frames, native, out_dir,
                                                      localisation=localisation)
        results["timing"][name] = {"videos": len(scores), "score_s": t1 - t0,
                                   "metrics_s": time.perf_counter() - t1}
    if out_dir is not None:
        results["files"] = {k: str(v) for k, v in report.write_reports(results, out_dir).items()}
    return results
