"""LaGoVAD training losses (paper section 4, numbers from the authors' release).

Every loss is a small ``nn.Module`` whose ``forward`` returns a dict of named scalar terms, so
the trainer can log each term. All of them respect the padding mask ``mask`` ([B, T] bool, True =
valid step): padded steps never enter a top-k, a mean, a softmax pool or a count, as in the
authors' training losses (only their inference-time top-5 mean counts padded steps).

Two recipes (``lagovad train --recipe``): :class:`OfficialLoss` is the authors' training step term
for term (both branches every step, logit pseudo-MIL, raw dot-product contrastive);
:class:`LaGoVADLoss` follows the paper's equations (one branch per batch, probability
pseudo-MIL, cosine contrastive). ``docs/COMPATIBILITY.md`` lists the differences.

Shapes used throughout: ``B`` videos, ``T`` steps, ``C`` classes of the batch's anomaly
definition (Normal = class 0), ``H`` hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lagovad.errors import LagovadError

__all__ = [
    "ContrastiveLoss",
    "OfficialLoss",
    "branch_terms",
    "FrameBCELoss",
    "LaGoVADLoss",
    "LossError",
    "MILAlignLoss",
    "MILLoss",
    "PseudoMILLoss",
    "masked_topk_mean",
    "mil_k",
]


class LossError(LagovadError, ValueError):
    """Inputs to a loss violate its contract (shapes, empty videos, label values)."""


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 autocast outputs are widened; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def mil_k(lengths: Tensor, divisor: int) -> Tensor:
    """Top-k size per video: ``max(length // divisor, 1)``.

    Args:
        lengths: [B] number of valid steps per video (or per region).
        divisor: 16 for MIL / MIL-align, 4 for pseudo-supervised MIL.

    Returns:
        [B] long tensor of k values.
    """
    return torch.clamp(torch.div(lengths, divisor, rounding_mode="floor"), min=1).long()


def masked_topk_mean(values: Tensor, mask: Tensor, k: Tensor) -> Tensor:
    """Mean of the ``k[b]`` largest valid entries of each row.

    Args:
        values: [B, T] or [B, T, C]; the top-k runs over dim 1.
        mask: [B, T] bool, True = the step may be selected.
        k: [B] long, 1 <= k[b] <= mask[b].sum().

    Returns:
        [B] or [B, C] means.

    Raises:
        LossError: if some row has fewer valid steps than its k.
    """
    counts = mask.sum(dim=1)
    if bool((k > counts).any()) or bool((k < 1).any()):
        bad = torch.nonzero((k > counts) | (k < 1)).flatten().tolist()
        raise LossError(
            f"top-k needs 1 <= k <= number of valid steps; rows {bad} have k={k[bad].tolist()} "
            f"and {counts[bad].tolist()} valid steps"
        )
    squeeze = values.dim() == 2
    vals = values.unsqueeze(-1) if squeeze else values  # [B, T, C]
    filled = vals.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    ordered = filled.sort(dim=1, descending=True).values
    rank = torch.arange(vals.shape[1], device=vals.device)
    chosen = (rank.unsqueeze(0) < k.unsqueeze(1)).unsqueeze(-1)  # [B, T, 1]
    # where() rather than multiplication: -inf * 0 would give NaN in the padded tail.
    total = torch.where(chosen, ordered, torch.zeros_like(ordered)).sum(dim=1)
    mean = total / k.unsqueeze(-1).to(total.dtype)
    return mean.squeeze(-1) if squeeze else mean


def _check_mask(logits: Tensor, mask: Tensor) -> Tensor:
    """Validate the padding mask against [B, T] logits and return per-video lengths."""
    if mask.shape != logits.shape[:2] or mask.dtype != torch.bool:
        raise LossError(
            f"mask must be a bool tensor of shape {tuple(logits.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise LossError(f"every video needs at least one valid step; rows {empty} are empty")
    return lengths


class MILLoss(nn.Module):
    """Multiple-instance loss: BCE-with-logits of the mean top-k logit vs the video label.

    k = max(len // 16, 1) with len the number of valid steps of each video.
    """

    def __init__(self, divisor: int = 16) -> None:
        super().__init__()
        self.divisor = divisor

    def forward(self, frame_logits: Tensor, mask: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            labels: [B] video labels (1 = abnormal).

        Returns:
            {"mil": scalar}.
        """
        lengths = _check_mask(frame_logits, mask)
        video_logit = masked_topk_mean(_wide(frame_logits), mask, mil_k(lengths, self.divisor))
        return {
            "mil": F.binary_cross_entropy_with_logits(video_logit, labels.to(video_logit.dtype))
        }


class FrameBCELoss(nn.Module):
    """Frame-level BCE-with-logits against the synthesized span labels, over valid steps only."""

    def forward(
        self, frame_logits: Tensor, mask: Tensor, frame_labels: Tensor
    ) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            frame_labels: [B, T] pseudo labels in {0, 1} (1 over the abnormal clip).

        Returns:
            {"frame_bce": scalar}, the mean over all valid steps of the batch.
        """
        _check_mask(frame_logits, mask)
        per_step = F.binary_cross_entropy_with_logits(
            _wide(frame_logits), frame_labels.to(_wide(frame_logits).dtype), reduction="none"
        )
        return {"frame_bce": per_step[mask].mean()}


class PseudoMILLoss(nn.Module):
    """Pseudo-supervised MIL on synthesized videos (the dynamic-video-synthesis term).

    Which videos are abnormal here follows the authors' rule: a video is abnormal for this term
    when its synthesized span has at least one valid step (an abnormal sample whose clip was cut
    away by the first-``max_len`` cut has none, and is scored as normal). Normal videos:
    k = max(len // 4, 1) over all valid steps, target 0. Abnormal videos: k = max(n_span // 4, 1)
    with the top-k taken inside the span only, target 1.

    Two scorings of the top-k (the only difference between the recipes):

    - ``"official"`` (the authors' release): the mean of the top-k *logits*, then
      BCE-with-logits.
    - ``"paper"`` (paper eq. 10-11): the mean of the top-k *probabilities* (sigmoid), then BCE.
    """

    def __init__(self, divisor: int = 4, scoring: str = "official") -> None:
        super().__init__()
        if scoring not in ("official", "paper"):
            raise LossError(f"scoring must be 'official' or 'paper', got {scoring!r}")
        self.divisor = divisor
        self.scoring = scoring

    def forward(
        self, frame_logits: Tensor, mask: Tensor, frame_labels: Tensor
    ) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            frame_labels: [B, T] span labels (1 over the abnormal clip).

        Returns:
            {"pseudo_mil": scalar}.
        """
        _check_mask(frame_logits, mask)
        span = mask & (frame_labels > 0.5)
        abnormal = span.any(dim=1)
        region = torch.where(abnormal.unsqueeze(1), span, mask)
        k = mil_k(region.sum(dim=1), self.divisor)
        target = abnormal.to(_wide(frame_logits).dtype)
        if self.scoring == "official":
            score = masked_topk_mean(_wide(frame_logits), region, k)
            return {"pseudo_mil": F.binary_cross_entropy_with_logits(score, target)}
        # sigmoid is monotone, so the top-k of the probabilities are those of the logits.
        score = masked_topk_mean(torch.sigmoid(_wide(frame_logits)), region, k)
        # binary_cross_entropy clamps log at -100, so a saturated sigmoid stays finite.
        return {"pseudo_mil": F.binary_cross_entropy(score, target)}


class MILAlignLoss(nn.Module):
    """Multi-class MIL-align: per class, mean of the top-(len // 16) similarity logits, then CE.

    Class 0 is Normal; targets index the batch's definition.
    """

    def __init__(self, divisor: int = 16) -> None:
        super().__init__()
        self.divisor = divisor

    def forward(self, class_logits: Tensor, mask: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            class_logits: [B, T, C] similarity logits (cosine / temperature).
            mask: [B, T] bool.
            targets: [B] long class indices in [0, C).

        Returns:
            {"mil_align": scalar}.
        """
        lengths = _check_mask(class_logits, mask)
        n_classes = class_logits.shape[-1]
        if bool(((targets < 0) | (targets >= n_classes)).any()):
            raise LossError(f"class targets must lie in [0, {n_classes}), got {targets.tolist()}")
        video = masked_topk_mean(_wide(class_logits), mask, mil_k(lengths, self.divisor))
        return {"mil_align": F.cross_entropy(video, targets.long())}


def _masked_softmax_pool(
    logits: Tensor, region: Tensor, features: Tensor, temperature: float, detach: bool
) -> Tensor:
    """softmax(logits / temperature) restricted to ``region``, used as weights over features.

    A row whose region is empty pools to the zero vector (what the authors' code gives for a
    background with no span steps).
    """
    scaled = _wide(logits) / temperature
    if detach:
        scaled = scaled.detach()
    has = region.any(dim=1, keepdim=True)
    # an empty region pools over a dummy full row, then is zeroed: no NaN, no gradient
    safe = region | ~has
    weights = torch.softmax(scaled.masked_fill(~safe, float("-inf")), dim=1) * has
    return torch.einsum("bt,bth->bh", weights, _wide(features))


class ContrastiveLoss(nn.Module):
    """Video-text contrastive loss with hard negative mining (paper section 4.2).

    Each video is pooled into a foreground feature: softmax(binary logits / eta) over its valid
    steps, applied to the pre-fusion temporal features (eta = 0.02). For abnormal videos whose
    sigmoid range (max - min over valid steps) is at least ``min_range``, the background of the
    abnormal span (softmax(-logit / eta) inside the span) is added as an extra negative. Each
    abnormal video has one text anchor (``anchors``, in batch order). text->video: each anchor
    against all pooled rows (foregrounds of the whole batch + mined backgrounds), its own video
    the positive. The loss is the average of that term and a second one, with label smoothing.

    The recipes differ in three places:

    - ``similarity``: ``"dot"`` (the authors' release: raw dot product, no normalisation, no
      temperature) or ``"cosine"`` (paper eq. 15-17: cosine / ``temperature``).
    - ``second``: ``"text"`` (release: each anchor against the abnormal foregrounds only) or
      ``"video"`` (paper eq. 17: each abnormal foreground against the anchors).
    - ``empty_background``: ``"zero"`` (release: a mined video whose span has no valid step,
      possible with the first-``max_len`` cut, contributes a zero feature) or ``"skip"``.

    ``detach_pool`` (our addition, off in both recipes): stop the gradient through the pooling
    weights into the binary logits, so the contrastive term trains the features and the text
    side only.
    """

    def __init__(
        self,
        similarity: str = "dot",
        second: str = "text",
        temperature: float = 0.02,
        pool_temperature: float = 0.02,
        min_range: float = 0.2,
        label_smoothing: float = 0.1,
        detach_pool: bool = False,
        empty_background: str = "zero",
    ) -> None:
        super().__init__()
        if similarity not in ("dot", "cosine"):
            raise LossError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        if second not in ("text", "video"):
            raise LossError(f"second must be 'text' or 'video', got {second!r}")
        if empty_background not in ("zero", "skip"):
            raise LossError(f"empty_background must be 'zero' or 'skip', got {empty_background!r}")
        self.similarity = similarity
        self.second = second
        self.temperature = temperature
        self.pool_temperature = pool_temperature
        self.min_range = min_range
        self.label_smoothing = label_smoothing
        self.detach_pool = detach_pool
        self.empty_background = empty_background

    def forward(
        self,
        frame_logits: Tensor,
        mask: Tensor,
        temporal: Tensor,
        anchors: Tensor,
        abnormal: Tensor,
        frame_labels: Tensor,
    ) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            temporal: [B, T, H] pre-fusion temporal features.
            anchors: [S, H] pre-fusion text feature of each abnormal video, in batch order.
            abnormal: [B] bool, the abnormal videos (S of them).
            frame_labels: [B, T] span labels (the abnormal clip of a synthesized video).

        Returns:
            {"contrastive": scalar}; zero (with a graph) when the batch has no abnormal video.

        Raises:
            LossError: if the number of anchors is not the number of abnormal videos.
        """
        _check_mask(frame_logits, mask)
        abnormal = abnormal.bool()
        rows_of = torch.nonzero(abnormal).flatten()
        if anchors.shape[0] != rows_of.numel():
            raise LossError(
                f"one anchor per abnormal video needed: {rows_of.numel()} abnormal videos, "
                f"{anchors.shape[0]} anchors"
            )
        if rows_of.numel() == 0:
            return {"contrastive": frame_logits.sum() * 0.0}
        eta = self.pool_temperature
        foreground = _masked_softmax_pool(frame_logits, mask, temporal, eta, self.detach_pool)
        rows = [foreground]
        probs = torch.sigmoid(_wide(frame_logits)).detach()
        high = probs.masked_fill(~mask, float("-inf")).amax(dim=1)
        low = probs.masked_fill(~mask, float("inf")).amin(dim=1)
        span = mask & (frame_labels > 0.5)
        mined = abnormal & ((high - low) >= self.min_range)
        if self.empty_background == "skip":
            mined = mined & span.any(dim=1)
        if bool(mined.any()):
            rows.append(
                _masked_softmax_pool(
                    -frame_logits[mined], span[mined], temporal[mined], eta, self.detach_pool
                )
            )
        videos = torch.cat(rows)  # [B + n_neg, H]
        text = _wide(anchors)
        if self.similarity == "cosine":
            sim = F.normalize(text, dim=-1) @ F.normalize(videos, dim=-1).T / self.temperature
        else:
            sim = text @ videos.T  # [S, B + n_neg]
        t2v = F.cross_entropy(sim, rows_of, label_smoothing=self.label_smoothing)
        among = sim[:, rows_of]  # [S anchors, S abnormal foregrounds]
        if self.second == "video":
            among = among.T
        own = torch.arange(among.shape[0], device=among.device)
        second = F.cross_entropy(among, own, label_smoothing=self.label_smoothing)
        return {"contrastive": 0.5 * (t2v + second)}


def branch_terms(
    frame_logits: Tensor,
    class_logits: Tensor,
    mask: Tensor,
    labels: Tensor,
    targets: Tensor,
    frame_labels: Tensor,
    pseudo_scoring: str,
) -> dict[str, Tensor]:
    """The four per-branch terms (MIL, frame BCE, pseudo-supervised MIL, MIL-align).

    Args:
        frame_logits: [B, T] raw binary logits of the branch.
        class_logits: [B, T, C] similarity logits of the branch.
        mask: [B, T] bool.
        labels: [B] video labels (1 = abnormal).
        targets: [B] class indices in the branch's definition (0 = Normal).
        frame_labels: [B, T] span labels.
        pseudo_scoring: "official" or "paper" (see :class:`PseudoMILLoss`).

    Returns:
        {"mil", "frame_bce", "pseudo_mil", "mil_align"}.
    """
    terms: dict[str, Tensor] = {}
    terms.update(MILLoss()(frame_logits, mask, labels))
    terms.update(FrameBCELoss()(frame_logits, mask, frame_labels))
    terms.update(PseudoMILLoss(scoring=pseudo_scoring)(frame_logits, mask, frame_labels))
    terms.update(MILAlignLoss()(class_logits, mask, targets))
    return terms


class LaGoVADLoss(nn.Module):
    """The paper recipe's loss: one branch (the batch's definition), all terms weight 1.

    ``forward`` takes the model output (anything with ``frame_logits``, ``class_logits``,
    ``temporal`` and ``text`` attributes) and the batch targets. The contrastive anchors are the
    pre-fusion definition texts of the abnormal videos (``text[targets]``, the paper's Z~: one
    row per abnormal video); cosine similarity / 0.02, video->text second term, probability
    pseudo-MIL (paper eq. 10-18).

    Args:
        detach_pool: our addition, see :class:`ContrastiveLoss`.
    """

    def __init__(self, detach_pool: bool = False) -> None:
        super().__init__()
        self.contrastive = ContrastiveLoss(
            similarity="cosine", second="video", detach_pool=detach_pool, empty_background="skip"
        )

    def forward(
        self,
        output: object,
        mask: Tensor,
        labels: Tensor,
        targets: Tensor,
        frame_labels: Tensor,
    ) -> dict[str, Tensor]:
        """Compute every term and their sum under key ``"loss"``.

        Args:
            output: model output with frame_logits [B, T], class_logits [B, T, C],
                temporal [B, T, H], text [C, H].
            mask: [B, T] bool.
            labels: [B] video labels under the batch's definition (1 = abnormal).
            targets: [B] class indices in the definition (0 = Normal).
            frame_labels: [B, T] span labels.

        Returns:
            dict of scalar tensors: mil, frame_bce, pseudo_mil, mil_align, contrastive, loss.
        """
        logits = output.frame_logits
        terms = branch_terms(
            logits, output.class_logits, mask, labels, targets, frame_labels, "paper"
        )
        abnormal = labels.bool() & (targets > 0)
        anchors = output.text[targets[abnormal]]
        terms.update(
            self.contrastive(logits, mask, output.temporal, anchors, abnormal, frame_labels)
        )
        terms["loss"] = sum(terms.values())
        return terms


class OfficialLoss(nn.Module):
    """The authors' training step, term for term (their ``training_step`` in lagovad.py).

    Both branches run on every batch: the class-names branch (the full names definition) and the
    descriptions branch (the normal prompt + one description per abnormal video). MIL, frame BCE,
    pseudo-supervised MIL (top-k logits, BCE-with-logits) and MIL-align are computed on each
    branch and summed; one contrastive term (raw dot product, text-vs-abnormal-videos second
    term) pools the pre-fusion temporal features with the *names* branch's binary logits and
    uses the pre-fusion description features as anchors: its anchors never involve the soft
    prompts (only the pooling weights do, through the names branch). The total is the plain sum
    of all terms (all weights 1).

    Args:
        detach_pool: our addition (off = the authors'), see :class:`ContrastiveLoss`.
    """

    def __init__(self, detach_pool: bool = False) -> None:
        super().__init__()
        self.contrastive = ContrastiveLoss(
            similarity="dot", second="text", detach_pool=detach_pool, empty_background="zero"
        )

    def forward(
        self,
        names: object,
        descriptions: object | None,
        mask: Tensor,
        labels: Tensor,
        name_targets: Tensor,
        desc_targets: Tensor,
        frame_labels: Tensor,
    ) -> dict[str, Tensor]:
        """Compute every term (summed over the branches) and the total under ``"loss"``.

        Args:
            names: names-branch output (frame_logits, class_logits, temporal).
            descriptions: descriptions-branch output (frame_logits, class_logits, text with row
                0 the normal prompt and row k the k-th abnormal video's description), or None
                when the batch has no abnormal video (that branch and the contrastive term are
                then skipped; the authors' step would fail on such a batch).
            mask: [B, T] bool.
            labels: [B] video labels (1 = abnormal).
            name_targets: [B] class indices in the names definition.
            desc_targets: [B] 0 for normal videos, k for the k-th abnormal video.
            frame_labels: [B, T] span labels.

        Returns:
            dict of scalar tensors: mil, frame_bce, pseudo_mil, mil_align, contrastive, loss.
        """
        terms = branch_terms(
            names.frame_logits, names.class_logits, mask, labels, name_targets, frame_labels,
            "official",
        )
        abnormal = labels.bool()
        if descriptions is None:
            if bool(abnormal.any()):
                raise LossError("a batch with abnormal videos needs the descriptions branch")
            terms["contrastive"] = names.frame_logits.sum() * 0.0
        else:
            more = branch_terms(
                descriptions.frame_logits, descriptions.class_logits, mask, labels,
                desc_targets, frame_labels, "official",
            )
            terms = {k: terms[k] + more[k] for k in terms}
            terms.update(
                self.contrastive(
                    names.frame_logits, mask, names.temporal, descriptions.text[1:], abnormal,
                    frame_labels,
                )
            )
        terms["loss"] = sum(terms.values())
        return terms
