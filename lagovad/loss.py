"""LaGoVAD training losses (paper section 4, numbers from the authors' release).

Every loss is a small ``nn.Module`` whose ``forward`` returns a dict of named scalar terms, so
the trainer can log each term. All of them respect the padding mask ``mask`` ([B, T] bool, True =
valid step): padded steps never enter a top-k, a mean, a softmax pool or a count. (The authors'
code counts padded steps in some of these; we do not copy that.)

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
        video_logit = masked_topk_mean(frame_logits.float(), mask, mil_k(lengths, self.divisor))
        return {"mil": F.binary_cross_entropy_with_logits(video_logit, labels.float())}


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
            frame_logits.float(), frame_labels.float(), reduction="none"
        )
        return {"frame_bce": per_step[mask].mean()}


class PseudoMILLoss(nn.Module):
    """Pseudo-supervised MIL on synthesized videos (paper eq. 10-11).

    Normal videos: k = max(len // 4, 1) over all valid steps, target 0. Abnormal videos:
    k = max(n_span // 4, 1) with the top-k taken inside the synthesized abnormal span only,
    target 1. The video score is the mean sigmoid of the top-k logits; BCE on that probability.
    """

    def __init__(self, divisor: int = 4) -> None:
        super().__init__()
        self.divisor = divisor

    def forward(
        self, frame_logits: Tensor, mask: Tensor, labels: Tensor, frame_labels: Tensor
    ) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            labels: [B] video labels (1 = abnormal).
            frame_labels: [B, T] span labels; abnormal videos need at least one valid span step.

        Returns:
            {"pseudo_mil": scalar}.
        """
        _check_mask(frame_logits, mask)
        abnormal = labels.bool()
        span = mask & (frame_labels > 0.5)
        region = torch.where(abnormal.unsqueeze(1), span, mask)
        sizes = region.sum(dim=1)
        if bool((sizes == 0).any()):
            bad = torch.nonzero(sizes == 0).flatten().tolist()
            raise LossError(f"abnormal videos need a non-empty valid span; rows {bad} have none")
        probs = torch.sigmoid(frame_logits.float())
        score = masked_topk_mean(probs, region, mil_k(sizes, self.divisor))
        # binary_cross_entropy clamps log at -100, so a saturated sigmoid stays finite.
        return {"pseudo_mil": F.binary_cross_entropy(score, labels.float())}


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
        video = masked_topk_mean(class_logits.float(), mask, mil_k(lengths, self.divisor))
        return {"mil_align": F.cross_entropy(video, targets.long())}


def _masked_softmax_pool(
    logits: Tensor, region: Tensor, features: Tensor, temperature: float
) -> Tensor:
    """softmax(logits / temperature) restricted to ``region``, used as weights over features."""
    scaled = (logits.detach().float() / temperature).masked_fill(~region, float("-inf"))
    weights = torch.softmax(scaled, dim=1)
    return torch.einsum("bt,bth->bh", weights, features.float())


class ContrastiveLoss(nn.Module):
    """Video-text contrastive loss with hard negative mining (paper eq. 13-18).

    Each video is pooled into a foreground feature: softmax(binary logits / eta) over its valid
    steps, applied to the pre-fusion temporal features. For abnormal videos whose sigmoid range
    (max - min over valid steps) is at least ``min_range``, the background of the abnormal span
    (softmax(-logit / eta) inside the span) is added as an extra negative. The text of each
    abnormal video's class (pre-fusion) is the anchor. text->video: each anchor against all pooled
    rows (foregrounds of the whole batch + mined backgrounds); video->text: each abnormal
    foreground against the anchors. Both with label smoothing; the loss is their average.

    Deviations by design: the pooling weights are detached (they act as attention weights; with
    the 1/0.02 scale, letting the contrastive gradient flow into the binary logits swamped the
    detection terms: on the synthetic learning task, val frame AUC after 12 epochs was 0.20 with
    the gradient and 0.73 without). When several abnormal videos of a batch share one class
    text, they are all positives for that text (uniform target) instead of an arbitrary single one.
    """

    def __init__(
        self,
        pool_temperature: float = 0.02,
        temperature: float = 0.02,
        min_range: float = 0.2,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        self.pool_temperature = pool_temperature
        self.temperature = temperature
        self.min_range = min_range
        self.label_smoothing = label_smoothing

    def forward(
        self,
        frame_logits: Tensor,
        mask: Tensor,
        temporal: Tensor,
        text: Tensor,
        labels: Tensor,
        targets: Tensor,
        frame_labels: Tensor,
    ) -> dict[str, Tensor]:
        """Compute the term.

        Args:
            frame_logits: [B, T] raw binary logits.
            mask: [B, T] bool.
            temporal: [B, T, H] pre-fusion temporal features.
            text: [C, H] pre-fusion text features of the definition.
            labels: [B] video labels (1 = abnormal).
            targets: [B] class index of each video in the definition.
            frame_labels: [B, T] span labels (the abnormal clip of a synthesized video).

        Returns:
            {"contrastive": scalar}; zero (with a graph) when the batch has no abnormal video.
        """
        _check_mask(frame_logits, mask)
        abnormal = labels.bool() & (targets > 0)
        if not bool(abnormal.any()):
            return {"contrastive": frame_logits.sum() * 0.0}
        foreground = _masked_softmax_pool(frame_logits, mask, temporal, self.pool_temperature)
        rows = [foreground]
        row_class = [torch.where(abnormal, targets, torch.full_like(targets, -1))]

        probs = torch.sigmoid(frame_logits.float()).detach()
        high = probs.masked_fill(~mask, float("-inf")).amax(dim=1)
        low = probs.masked_fill(~mask, float("inf")).amin(dim=1)
        span = mask & (frame_labels > 0.5)
        mined = abnormal & ((high - low) >= self.min_range) & span.any(dim=1)
        if bool(mined.any()):
            background = _masked_softmax_pool(
                -frame_logits[mined], span[mined], temporal[mined], self.pool_temperature
            )
            rows.append(background)
            row_class.append(torch.full((int(mined.sum()),), -1, device=targets.device))
        videos = F.normalize(torch.cat(rows), dim=-1)  # [B + n_neg, H]
        video_class = torch.cat(row_class)

        anchor_class = targets[abnormal]
        anchors = F.normalize(text.float()[anchor_class], dim=-1)  # [B2, H]
        sim = anchors @ videos.T / self.temperature  # [B2, B + n_neg]
        positives = (anchor_class.unsqueeze(1) == video_class.unsqueeze(0)).float()
        t2v = F.cross_entropy(
            sim,
            positives / positives.sum(dim=1, keepdim=True),
            label_smoothing=self.label_smoothing,
        )
        # video->text: abnormal foregrounds against the anchors.
        v_sim = sim[:, : foreground.shape[0]][:, abnormal].T  # [B2, B2]
        same = (anchor_class.unsqueeze(1) == anchor_class.unsqueeze(0)).float()
        v2t = F.cross_entropy(
            v_sim, same / same.sum(dim=1, keepdim=True), label_smoothing=self.label_smoothing
        )
        return {"contrastive": 0.5 * (t2v + v2t)}


class LaGoVADLoss(nn.Module):
    """Sum of all LaGoVAD terms (all weight 1), with the terms kept for logging.

    ``forward`` takes the model output (anything with ``frame_logits``, ``class_logits``,
    ``temporal`` and ``text`` attributes) and the batch targets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mil = MILLoss()
        self.frame_bce = FrameBCELoss()
        self.pseudo_mil = PseudoMILLoss()
        self.mil_align = MILAlignLoss()
        self.contrastive = ContrastiveLoss()

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
        terms: dict[str, Tensor] = {}
        terms.update(self.mil(logits, mask, labels))
        terms.update(self.frame_bce(logits, mask, frame_labels))
        terms.update(self.pseudo_mil(logits, mask, labels, frame_labels))
        terms.update(self.mil_align(output.class_logits, mask, targets))
        terms.update(
            self.contrastive(
                logits, mask, output.temporal, output.text, labels, targets, frame_labels
            )
        )
        terms["loss"] = sum(terms.values())
        return terms
