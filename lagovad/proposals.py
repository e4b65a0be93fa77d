"""LaGoVAD span proposals for human review, from the features already in the store.

``prevad review push|export --checkpoint DIR`` proposes the anomaly spans of validation videos
with the detector of a LaGoVAD checkpoint. The data layer (:mod:`prevad.review`) imports no
model (docs/DECISIONS.md, D2): it takes any :class:`prevad.review.SpanProposer`, and the
``prevad`` command (:mod:`toolkit.cli`) passes this one in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lagovad.definition import AnomalyDefinition
from lagovad.detect import find_intervals, load_detector, score_features
from prevad import taxonomy

if TYPE_CHECKING:
    from prevad.review import PreLabel
    from prevad.store import Store


class DetectorSpans:
    """LaGoVAD on stored features -> proposed spans (the model is loaded once, here)."""

    def __init__(self, checkpoint: str | Path) -> None:
        """Load the detector of ``checkpoint`` and encode the top-level classes once.

        Raises:
            lagovad.LagovadError: the checkpoint cannot be loaded.
        """
        self.model, self.label = load_detector(checkpoint)
        self.definition = AnomalyDefinition.from_strings(list(taxonomy.TOP_LEVEL), kind="names")
        self.text = self.model.encode_definition(self.definition)

    def spans(self, store: Store, pre: PreLabel) -> list[list[float]] | None:
        """Relative spans of the runs the detector scores as anomalous (None: no features of
        the detector's dimension for the video, or its frame count is unknown)."""
        dim = int(self.model.config["video_dim"])
        rows = [
            r for r in store.read("features").to_pylist()
            if r["video_id"] == pre.video_id and r["dim"] == dim
        ]
        n = pre.n_frames
        if not rows or not n:
            return None
        row = rows[0]
        feats = store.load_features(row)
        scores, _, _ = score_features(self.model, feats, self.definition, text=self.text)
        stride = int(row["frame_stride"])
        runs = find_intervals(scores, step_s=float(stride), min_duration_s=0.0, merge_gap_s=0.0)
        return [
            [min(first * stride, n) / n, min((last + 1) * stride, n) / n]
            for first, last, _, _ in runs
        ]
