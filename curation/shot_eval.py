"""Scores of shot-boundary and duplicate detection against planted truth (one place for the
benchmarks, the tests and the generated-world report).

Boundaries are matched one-to-one, greedily by distance: a predicted event matches at most one
true event within the tolerance and vice versa; F1 is the harmonic mean of precision and
recall (both 1.0 when there is nothing to find and nothing was found).

- hard cuts: frame of the first frame of the new shot, tolerance in frames (``tol_frames=1``);
- dissolves (and fades): ``[start, end)`` spans, matched on their centres, tolerance in
  seconds (``tol_s=0.5``);
- duplicates: predicted ``copy -> kept`` pairs against groups of true copies; a pair is right
  when both videos are in one true group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Scores:
    """Detection counts and rates."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / predicted (1.0 when nothing was predicted)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / true (1.0 when there was nothing to find)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float]:
        """Counts and rates (rounded to 4 places)."""
        return {**asdict(self), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


EMPTY = Scores(0, 0, 0)


def match_events(predicted: Sequence[float], truth: Sequence[float], tol: float) -> Scores:
    """One-to-one matching of event positions within ``tol`` (closest pairs first)."""
    pairs = sorted((abs(p - t), i, j) for i, p in enumerate(predicted)
                   for j, t in enumerate(truth) if abs(p - t) <= tol + 1e-9)
    used_p: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    tp = len(used_p)
    return Scores(tp, len(predicted) - tp, len(truth) - tp)


def cut_scores(predicted: Sequence[int], truth: Sequence[int], tol_frames: int = 1) -> Scores:
    """Hard cuts (first frame of each new shot) matched within ``tol_frames`` frames."""
    return match_events([float(p) for p in predicted], [float(t) for t in truth], tol_frames)


def transition_scores(predicted: Sequence[tuple[float, float]],
                      truth: Sequence[tuple[float, float]], tol_s: float = 0.5) -> Scores:
    """Gradual transitions ``(start_s, end_s)`` matched on their centres within ``tol_s``."""
    return match_events([(a + b) / 2 for a, b in predicted], [(a + b) / 2 for a, b in truth],
                        tol_s)


def frames_to_seconds(spans: Iterable[tuple[int, int]], fps: float) -> list[tuple[float, float]]:
    """Frame spans ``[start, end)`` as seconds at a constant ``fps``."""
    return [(a / fps, b / fps) for a, b in spans]


def duplicate_scores(predicted: Mapping[str, str], groups: Iterable[Iterable[str]],
                     items: Iterable[str] | None = None) -> Scores:
    """Predicted ``copy -> kept`` pairs against true groups of copies.

    A predicted pair is a true positive when both ids are in one true group; every video of a
    true group but one (the kept one) should be marked, so ``fn`` counts the group members
    beyond the first that were not marked. ``items`` (all videos considered) is only checked:
    ids outside it are an error in the caller.
    """
    group_of: dict[str, int] = {}
    sizes: list[int] = []
    for g, members in enumerate(groups):
        members = list(members)
        sizes.append(len(members))
        for m in members:
            group_of[m] = g
    if items is not None:
        known = set(items)
        stray = [k for k in (*predicted, *predicted.values()) if k not in known]
        if stray:
            raise ValueError(f"predicted ids not among the items: {stray[:3]}")
    tp = sum(1 for c, k in predicted.items()
             if c in group_of and k in group_of and group_of[c] == group_of[k])
    fp = len(predicted) - tp
    expected = sum(s - 1 for s in sizes)
    return Scores(tp, fp, max(0, expected - tp))
