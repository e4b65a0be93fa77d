"""The two training recipes of ``lagovad train``: what one optimisation step computes.

``official`` (the default) is the authors' training step, term for term (their
``src/models/LaGoVAD/lagovad.py`` ``training_step``, ``losses.py``, ``datamodules.py``):

- the temporal encoder runs once; the fusion and both heads run twice, once per branch:
  the **names branch** (the full names definition: with PreVAD classes, all 36 PreVAD names, in
  every step) and the **descriptions branch** (the shared normal prompt + one description per
  abnormal video of the batch, duplicates kept, each video its own class);
- MIL, frame BCE, pseudo-supervised MIL and MIL-align on each branch, summed; one contrastive
  term (:class:`lagovad.loss.OfficialLoss`).

``paper`` follows the paper's equations where they differ from the release: one branch per batch
(names or descriptions, ``description_prob``), a names definition of Normal + the classes present
in the batch, probability pseudo-MIL and the cosine contrastive term
(:class:`lagovad.loss.LaGoVADLoss`).

Our additions, named options on top of either recipe (all off reproduces the authors' step):
``exclude_prob`` (a batch's definition sometimes leaves out one class present in the batch, whose
videos are then trained as normal, so the definition steers detection; in the official recipe
such a step's names definition is Normal + the other classes present), ``detach_pool``
(contrastive pooling weights detached) and gradient clipping (in :mod:`lagovad.train`).

Fallbacks where the authors' step fails: an abnormal video without a description uses its class
name as its description text (their step crashes when one abnormal video of a batch lacks
descriptions and another has them), and a batch without abnormal videos skips the descriptions
branch and the contrastive term (their step fails on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lagovad.definition import NORMAL, NORMAL_PROMPT
from lagovad.model import LaGoVAD, LaGoVADOutput
from lagovad.synthesis import Batch
from prevad.taxonomy import HIERARCHY

__all__ = [
    "PREVAD_NAMES",
    "RECIPES",
    "OfficialTargets",
    "forward_branches",
    "names_vocabulary",
    "plan_official",
]

RECIPES = ("official", "paper")

#: The authors' PreVAD class list (their DEFAULT_CLASSES order): Normal, then each top-level
#: class followed by its sub-categories; 36 names.
PREVAD_NAMES: tuple[str, ...] = (
    NORMAL,
    *(name for top, subs in HIERARCHY.items() for name in (top, *subs)),
)


def names_vocabulary(categories: Sequence[str]) -> list[str]:
    """The names definition of the official recipe (Normal first).

    The authors use all 36 PreVAD names in every step. When every training category is a PreVAD
    name that is this list; otherwise (a store with other classes) it is Normal + every training
    category, sorted: the same rule (every class of the training set in every step) for a
    different class list.

    Args:
        categories: the anomaly categories of the training split.

    Returns:
        Class names, Normal first.
    """
    if set(categories) <= set(PREVAD_NAMES[1:]):
        return list(PREVAD_NAMES)
    return [NORMAL, *sorted(set(categories))]


@dataclass
class OfficialTargets:
    """What the official step trains one batch on.

    Attributes:
        labels: [B] video labels (1 = abnormal) after any exclusion.
        frame_labels: [B, T] span labels after any exclusion.
        names: the names definition (Normal first).
        name_targets: [B] index of each video's class in ``names``.
        descriptions: the descriptions definition: the normal prompt, then one text per
            abnormal video in batch order (empty when the batch has no abnormal video).
        desc_targets: [B] 0 for normal videos, k for the k-th abnormal video.
        excluded: the class left out of both definitions this step (``exclude_prob``), or None.
    """

    labels: Tensor
    frame_labels: Tensor
    names: list[str]
    name_targets: Tensor
    descriptions: list[str]
    desc_targets: Tensor
    excluded: str | None = None


def plan_official(
    batch: Batch, names: Sequence[str], rng: np.random.Generator, exclude_prob: float = 0.0
) -> OfficialTargets:
    """Targets of the official step for one batch.

    Args:
        batch: the collated batch.
        names: the names vocabulary (:func:`names_vocabulary`); every category of the batch
            must be in it.
        rng: the step's generator (used only when ``exclude_prob`` > 0).
        exclude_prob: chance that one class present in the batch is left out of both
            definitions; its videos then count as normal (label 0, frame labels 0), and the
            names definition of that step is Normal + the other classes present (one random
            other class when none is).

    Returns:
        The targets.

    Raises:
        ValueError: a batch category is not in ``names``.
    """
    labels = batch.labels.clone()
    frame_labels = batch.frame_labels.clone()
    names = list(names)
    abnormal = [i for i, y in enumerate(labels.tolist()) if y == 1]
    missing = sorted({batch.categories[i] for i in abnormal} - set(names))
    if missing:
        raise ValueError(f"batch categories {missing} are not in the names definition")
    excluded = None
    present = sorted({batch.categories[i] for i in abnormal})
    if exclude_prob > 0 and present and rng.random() < exclude_prob:
        excluded = present[int(rng.integers(0, len(present)))]
        for i in abnormal:
            if batch.categories[i] == excluded:
                labels[i] = 0
                frame_labels[i] = 0.0
        abnormal = [i for i in abnormal if labels[i] == 1]
        # The step's names definition shrinks to the other classes present (as a user's short
        # definition would be): with all 35 others kept, leaving one name out changed the
        # definition too little to steer detection (learning task: scores fell by 0.04-0.13
        # instead of the >= 0.1 for every class reached this way).
        kept = sorted({batch.categories[i] for i in abnormal})
        if not kept:
            others = [n for n in names[1:] if n != excluded]
            kept = [others[int(rng.integers(0, len(others)))]] if others else []
        names = [names[0], *kept]
    name_targets = torch.zeros_like(labels)
    desc_targets = torch.zeros_like(labels)
    descriptions = [NORMAL_PROMPT] if abnormal else []
    for k, i in enumerate(abnormal, start=1):
        name_targets[i] = names.index(batch.categories[i])
        desc_targets[i] = k
        text = " ".join(batch.descriptions[i].split())
        descriptions.append(text or batch.categories[i])  # our fallback, see the module doc
    return OfficialTargets(
        labels, frame_labels, names, name_targets, descriptions, desc_targets, excluded
    )


def forward_branches(
    model: LaGoVAD, video: Tensor, mask: Tensor, texts: Sequence[Tensor]
) -> list[LaGoVADOutput]:
    """Run the temporal encoder once and the fusion and heads once per text set.

    This is the authors' forward in training: both branches share one temporal encoding (and,
    in train mode, one dropout draw of it); each branch's fusion draws its own dropout. See
    :meth:`lagovad.model.LaGoVAD.forward_texts` (rows in length groups, shared projections).

    Args:
        model: the model.
        video: [B, T, D] features.
        mask: [B, T] bool.
        texts: pre-fusion text features, one [C_i, H] tensor per branch.

    Returns:
        One :class:`LaGoVADOutput` per branch (``temporal`` is shared).
    """
    return model.forward_texts(video, mask, texts)
