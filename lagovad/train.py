"""The LaGoVAD trainer: one loop, read top to bottom.

    config -> data (store, validated before anything else) -> model -> optimizer + schedule
    -> (resume) -> for each epoch: synthesize, build the step's definitions, step; validate;
    checkpoint.

The step follows ``recipe`` (:mod:`lagovad.recipe`): ``"official"`` (default) is the authors'
training step term for term, ``"paper"`` the paper's equations. Optimiser and schedule as the
authors': AdamW lr 5e-5, weight decay 0, cosine schedule with 20 warm-up steps, 40 epochs, batch
64, seed 2024, max length 512. Additions of ours, each a named option and off by default, so the
defaults reproduce the authors' recipe: gradient clipping (``grad_clip``), ``exclude_prob`` (a
batch's definitions sometimes leave out one class present in the batch and its videos are trained
as normal, so the definition steers detection), ``detach_pool`` (contrastive pooling weights
detached) and the synthesis ``synth_cut="window"``. One is always on: bf16 autocast on CUDA (the
authors train in fp32).

Checkpoints (one folder per epoch, renamed into place when complete, so never half-written):
``model.safetensors`` + ``config.json`` + ``training_state.*`` (optimizer and scheduler) via
:func:`lagovad.save_checkpoint` (extra holds the train config, step, epoch, metrics, history),
and ``rng_state.safetensors`` (torch CPU/CUDA RNG states). ``training_curves.png`` in the output
folder plots the loss terms and the validation AUC/AP per epoch, redrawn after every epoch.
``resume`` continues from such a folder (or from an output folder, using its latest epoch) and
reaches the same weights as an uninterrupted run.

This module is not imported by ``lagovad/__init__``: it is the ``lagovad train`` command.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

import lagovad
from lagovad.checkpoint import WEIGHTS, load_weights, read_checkpoint_config
from lagovad.data import (
    DataError,
    FeatureIndex,
    SplitData,
    feature_index,
    frame_ground_truth,
    load_retrieval_cache,
    load_split,
    resolve_feature_model,
)
from lagovad.definition import AnomalyDefinition
from lagovad.errors import LagovadError, LagovadWarning
from lagovad.loss import LaGoVADLoss, OfficialLoss
from lagovad.manifest import (
    MANIFEST,
    ManifestError,
    build_manifest,
    link_manifest,
    read_manifest,
    verify,
    write_manifest,
)
from lagovad.metrics import average_precision, roc_auc
from lagovad.recipe import RECIPES, forward_branches, names_vocabulary, plan_official
from lagovad.synthesis import (
    CUT_RULES,
    Batch,
    DynamicSynthesizer,
    Neighbours,
    SynthSample,
    collate,
    neighbour_rows,
)
from prevad import Store
from prevad.io import atomic_save_png, atomic_write, atomic_write_json

__all__ = [
    "TrainConfig",
    "TrainError",
    "batch_definition",
    "evaluate_split",
    "lr_at",
    "plot_history",
    "train",
    "train_step",
    "train_step_terms",
]

RNG_STATE = "rng_state.safetensors"
LATEST = "latest.json"
CURVES = "training_curves.png"


class TrainError(LagovadError, ValueError):
    """A training configuration or resume folder is invalid."""


@dataclass
class TrainConfig:
    """Everything a run depends on (stored in every checkpoint).

    Attributes:
        store: prevad store root.
        out: output folder (checkpoints, history).
        model: model config name (``lagovad/model_configs/<name>.json``).
        pretrained: start from these weights instead of a random init.
        feature_model: feature ``model_id`` in the store (default: the only one stored).
        dataset: only annotations of this dataset (default: all).
        labels: "final" (a video's human annotation, else its model one) or "human" (only
            human-confirmed annotations, e.g. the reviewed labels of a curated store).
        train_split: split to train on.
        val_split: split to validate on each epoch ("" = none).
        epochs, batch_size, lr, weight_decay, warmup_steps, seed: the usual.
        max_len: synthesized length (default: the model's ``max_len``).
        grad_clip: max gradient norm (0 = off, the authors'; our addition).
        device: "auto", "cpu", "cuda", "cuda:1", ...
        recipe: "official" (the authors' training step) or "paper" (lagovad.recipe).
        description_prob: paper recipe only: chance a batch uses descriptions instead of names.
        exclude_prob: chance a batch's definition leaves one present class out (module doc;
            0 = the authors'; our addition).
        detach_pool: detach the contrastive pooling weights (False = the authors'; our
            addition).
        synth_cut: synthesis cut rule, "first" (the authors') or "window" (our fix); "" = the
            recipe's (official: first, paper: window).
        neighbour_cache: the authors' retrieval cache (train_search_cache.json) to use as the
            synthesis neighbour index instead of computing one.
        neighbours_k: neighbours per video in the synthesis index.
        workers: DataLoader processes that synthesize batches while the model trains (0 = on
            the training thread); the batches do not depend on it.
        manifest: train on exactly the dataset this manifest lists (``dataset.parquet`` of an
            earlier run, :mod:`lagovad.manifest`); its label rule, feature model and splits
            replace ``labels``, ``feature_model``, ``dataset`` and the split names.
        progress: show a progress bar.
        keep_last: keep only the newest N epoch folders (0 = keep all).
        resume: checkpoint folder (or output folder) to continue from.
        overwrite: replace a run already in ``out`` (without it, such an ``out`` is refused
            unless ``resume`` continues that very run).
    """

    store: str
    out: str
    model: str = "lagovad-b16"
    pretrained: str | None = None
    feature_model: str | None = None
    dataset: str | None = None
    labels: str = "final"
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 20
    seed: int = 2024
    max_len: int | None = None
    grad_clip: float = 0.0
    device: str = "auto"
    recipe: str = "official"
    description_prob: float = 0.5
    exclude_prob: float = 0.0
    detach_pool: bool = False
    synth_cut: str = ""
    neighbour_cache: str | None = None
    neighbours_k: int = 10
    workers: int = 2
    manifest: str | None = None
    progress: bool = True
    keep_last: int = 0
    resume: str | None = None
    overwrite: bool = False

    def validate(self) -> None:
        """Raise TrainError on out-of-range values."""
        positive = ("epochs", "batch_size", "neighbours_k")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "grad_clip", "description_prob", "exclude_prob"):
            if not math.isfinite(getattr(self, name)):
                raise TrainError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TrainError(f"lr must be > 0, got {self.lr}")
        if self.max_len is not None and self.max_len < 1:
            raise TrainError(f"max_len must be >= 1, got {self.max_len}")
        if self.labels not in ("final", "human"):
            raise TrainError(f"labels must be 'final' or 'human', got {self.labels!r}")
        for name in ("description_prob", "exclude_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if min(self.warmup_steps, self.weight_decay, self.grad_clip, self.keep_last,
               self.workers) < 0:
            raise TrainError("warmup_steps, weight_decay, grad_clip, keep_last and workers must "
                             "be >= 0")
        if self.recipe not in RECIPES:
            raise TrainError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.synth_cut not in ("", *CUT_RULES):
            raise TrainError(f"synth_cut must be one of {CUT_RULES} (or empty), got "
                             f"{self.synth_cut!r}")

    @property
    def cut_rule(self) -> str:
        """The synthesis cut rule in effect (the recipe's unless ``synth_cut`` is set)."""
        return self.synth_cut or ("first" if self.recipe == "official" else "window")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``asdict`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ----------------------------------------------------------------------------- run folder
#: Settings that may change between a run and its resume without a warning: where files go and
#: how the run is shown, not what it computes.
RESUMABLE_CHANGES = frozenset(
    {"out", "progress", "device", "keep_last", "resume", "overwrite", "workers"}
)


def run_contents(out: Path) -> list[Path]:
    """What makes ``out`` hold a training run: epoch folders, ``latest.json``, curves."""
    if not out.is_dir():
        return []
    found = sorted(out.glob("epoch-[0-9][0-9][0-9]"))
    found += [p for p in (out / LATEST, out / CURVES) if p.exists()]
    return found


def check_out_folder(cfg: TrainConfig, resume_from: Path | None) -> list[Path]:
    """Refuse an ``out`` that already holds another run, unless ``cfg.overwrite``.

    Resuming a checkpoint that lies inside ``out`` continues that run and is always allowed.

    Args:
        cfg: the run's configuration.
        resume_from: the resolved checkpoint folder to resume from, if any.

    Returns:
        What :func:`clear_out_folder` must delete once the run has passed every check (empty
        when nothing is to be replaced).

    Raises:
        TrainError: ``out`` is a file, or holds a run and neither ``resume`` continues it nor
            ``overwrite`` is set.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; it must be a folder for the checkpoints")
    found = run_contents(out)
    if not found:
        return []
    if resume_from is not None and resume_from.resolve().parent == out.resolve():
        return []  # continuing the run that is there
    if not cfg.overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise TrainError(
            f"--out {out} already holds a training run ({names}); pass --resume {out} to "
            "continue it, --overwrite to replace it, or choose another --out"
        )
    return found


def clear_out_folder(found: Sequence[Path]) -> None:
    """Delete a replaced run's files (called only after every input check has passed)."""
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_train_split(cfg: TrainConfig, data: SplitData) -> None:
    """Training needs abnormal and normal videos (MIL pairs them; synthesis mixes them)."""
    n_abnormal = int(data.is_anomaly.sum())
    n_normal = len(data) - n_abnormal
    if not n_abnormal or not n_normal:
        where = f"store {cfg.store}, split {cfg.train_split!r}" + (
            f", dataset {cfg.dataset!r}" if cfg.dataset else "")
        missing = "no abnormal" if not n_abnormal else "no normal"
        raise TrainError(
            f"{where} has {missing} videos ({n_abnormal} abnormal, {n_normal} normal): training "
            "needs both"
        )


def resume_changes(cfg: TrainConfig, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings of ``cfg`` that differ from the ``train_config`` a checkpoint was written with.

    Args:
        cfg: the configuration of the resumed run.
        saved: the checkpoint's ``extra["train_config"]``.

    Returns:
        ``{name: (saved value, new value)}`` for every changed setting that affects the result.
    """
    now = asdict(cfg)
    return {
        k: (saved[k], now[k])
        for k in sorted(now.keys() & saved.keys())
        if k not in RESUMABLE_CHANGES and saved[k] != now[k]
    }


def warn_resume_changes(cfg: TrainConfig, folder: Path) -> None:
    """Warn (LagovadWarning) when resuming with settings other than the checkpoint's."""
    saved = read_checkpoint_config(folder).get("extra", {}).get("train_config")
    if not isinstance(saved, dict):
        return
    changes = resume_changes(cfg, saved)
    if changes:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        warnings.warn(
            f"resuming {folder} with settings that differ from the run it continues: {listed}; "
            "the result will not equal an uninterrupted run with either setting",
            LagovadWarning,
            stacklevel=2,
        )


# ----------------------------------------------------------------------------- data
@dataclass
class TrainingData:
    """What a run trains and validates on.

    Attributes:
        feature_model: the feature model id.
        train: the training split.
        val: the validation split (None: no validation).
        train_index: checksums and means of the training features.
        manifest: the run's manifest rows (:mod:`lagovad.manifest`).
        meta: the manifest's summary (digest, label rule, sources, ...).
    """

    feature_model: str
    train: SplitData
    val: SplitData | None
    train_index: FeatureIndex
    manifest: Any
    meta: dict[str, Any]


def load_training_data(cfg: TrainConfig, store: Store, dim: int) -> TrainingData:
    """Resolve the training (and validation) split, check every feature file, build the
    manifest; with ``cfg.manifest`` take exactly the annotations it lists and verify them.

    Raises:
        DataError: the store cannot provide the data (named ids).
        ManifestError: the manifest cannot be read or lists what the store no longer holds.
    """
    pinned = read_manifest(cfg.manifest) if cfg.manifest else None
    if pinned is None:
        feature_model = resolve_feature_model(store, cfg.feature_model)
        labels, dataset = cfg.labels, cfg.dataset
        train_split, val_split = cfg.train_split, cfg.val_split
    else:
        meta = pinned.meta
        feature_model, labels, dataset = meta["feature_model"], meta["labels"], meta["dataset"]
        train_split = meta["train_split"]
        val_split = (meta.get("val_split") or "") if cfg.val_split else ""

    def split(role: str, name: str) -> tuple[SplitData, FeatureIndex]:
        ids = None
        if pinned is not None:
            ids = pinned.rows(role).column("annotation_id").to_pylist()
        try:
            data = load_split(store, name, feature_model, dim, dataset, require_spans=role == "val",
                              labels=labels, annotation_ids=ids)
            if role == "train":
                check_train_split(cfg, data)
            index = feature_index(store, data, progress=cfg.progress)
        except (DataError, TrainError) as exc:
            if pinned is None:
                raise
            raise ManifestError(f"manifest {pinned.path} ({role}): the store no longer holds "
                                f"the dataset it lists: {exc}") from None
        if pinned is not None:
            verify(pinned, role, data, index.checksums)
        return data, index

    train_data, train_index = split("train", train_split)
    val_data = val_index = None
    if val_split:
        val_data, val_index = split("val", val_split)
    parts = {"train": (train_data, train_index.checksums)}
    if val_data is not None:
        parts["val"] = (val_data, val_index.checksums)
    table, meta = build_manifest(parts, {
        "store": str(store.root), "feature_model": feature_model, "labels": labels,
        "dataset": dataset, "train_split": train_split, "val_split": val_split,
        "from_manifest": str(pinned.path) if pinned is not None else None,
    })
    return TrainingData(feature_model, train_data, val_data, train_index, table, meta)


def warn_dataset_changed(saved: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    """Warn when a resumed run's dataset differs from the one its checkpoint trained on."""
    before = ((saved.get("extra") or {}).get("dataset") or {}).get("digest")
    if before and before != meta["digest"]:
        warnings.warn(
            f"the training data changed since the run began (dataset {before[:12]} -> "
            f"{meta['digest'][:12]}); pass --manifest {out / MANIFEST} to continue on the "
            "data the run started with",
            LagovadWarning,
            stacklevel=2,
        )


class _EpochSamples(torch.utils.data.Dataset):
    """Sample ``i`` of one epoch (for ``DataLoader`` workers)."""

    def __init__(self, synth: DynamicSynthesizer, epoch: int):
        self.synth, self.epoch = synth, epoch

    def __len__(self) -> int:
        return len(self.synth)

    def __getitem__(self, index: int) -> SynthSample | str:
        try:
            return self.synth.sample(index, self.epoch)
        except LagovadError as exc:  # one error line in the trainer, not a worker traceback
            return f"{type(exc).__name__}: {exc}"


def _collate_or_fail(samples: list[SynthSample | str]) -> Batch | str:
    failed = [s for s in samples if isinstance(s, str)]
    return failed[0] if failed else collate(samples)  # type: ignore[arg-type]


def epoch_batches(
    synth: DynamicSynthesizer, epoch: int, order: list[list[int]], workers: int
) -> Iterator[Batch]:
    """The epoch's batches in ``order``, synthesized by ``workers`` DataLoader processes (0: on
    this thread) while the model trains. Samples depend only on (seed, epoch, index), so the
    batches are the same for any number of workers.

    Raises:
        DataError: a sample could not be read (its feature file is gone or damaged).
    """
    loader = torch.utils.data.DataLoader(
        _EpochSamples(synth, epoch), batch_sampler=order, collate_fn=_collate_or_fail,
        num_workers=workers, prefetch_factor=2 if workers else None,
        # its own generator: the loader's worker seeds must not draw from the global RNG,
        # which the model's dropout uses (runs with any number of workers stay identical)
        generator=torch.Generator().manual_seed(epoch),
    )
    for batch in loader:
        if isinstance(batch, str):
            raise DataError(batch.partition(": ")[2])
        yield batch


# ----------------------------------------------------------------------------- small pieces
def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} requested but CUDA is not available")
    return device


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_definition(
    batch: Batch,
    rng: np.random.Generator,
    categories: Sequence[str],
    description_prob: float,
    exclude_prob: float,
) -> tuple[AnomalyDefinition, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's anomaly definition and targets under it (paper: names or descriptions).

    Names: Normal + the batch's anomaly classes. Descriptions: the normal prompt + the
    description of each abnormal video (used only when every abnormal video of the batch has
    one). With ``exclude_prob`` one present class is left out of either kind of definition (all
    its names or descriptions) and its videos become normal under it (label 0, frame labels 0,
    class 0): the same features are then abnormal under one definition and normal under
    another, which is what makes the definition steer detection and not only classification.
    A names definition left empty gets one random other training class.

    Args:
        batch: the collated batch.
        rng: the step's generator.
        categories: all anomaly classes of the training split.
        description_prob: chance to use descriptions.
        exclude_prob: chance to leave one present class out.

    Returns:
        (definition, labels [B], targets [B], frame_labels [B, T]).
    """
    labels = batch.labels.clone()
    frame_labels = batch.frame_labels.clone()
    abnormal = [i for i, y in enumerate(labels.tolist()) if y == 1]
    present = sorted({batch.categories[i] for i in abnormal})
    descs = {i: " ".join(batch.descriptions[i].split()) for i in abnormal}
    use_desc = bool(abnormal) and all(descs.values()) and rng.random() < description_prob
    if present and rng.random() < exclude_prob:
        dropped = present[int(rng.integers(0, len(present)))]
        for i in abnormal:
            if batch.categories[i] == dropped:
                labels[i] = 0
                frame_labels[i] = 0.0
        abnormal = [i for i in abnormal if labels[i] == 1]
        present.remove(dropped)
    if use_desc and abnormal:
        # the definition rejects duplicates up to case: keep the first spelling of each
        texts = list({descs[i].casefold(): descs[i] for i in reversed(abnormal)}.values())[::-1]
        definition = AnomalyDefinition.from_strings(texts, kind="descriptions")
        keys = {t.casefold(): k + 1 for k, t in enumerate(definition.texts[1:])}
        per_sample = {i: keys[descs[i].casefold()] for i in abnormal}
    else:
        classes = present
        if not classes:
            others = [c for c in categories if c not in present and c not in batch.categories]
            others = others or list(categories)
            classes = [others[int(rng.integers(0, len(others)))]]
        definition = AnomalyDefinition.from_strings(classes, kind="names")
        index = {c: k + 1 for k, c in enumerate(classes)}
        per_sample = {i: index[batch.categories[i]] for i in abnormal}
    targets = torch.zeros_like(labels)
    for i, t in per_sample.items():
        targets[i] = t
    return definition, labels, targets, frame_labels


def train_step_terms(
    model: torch.nn.Module,
    batch: Batch,
    cfg: TrainConfig,
    categories: Sequence[str],
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The loss terms of one training step under ``cfg.recipe`` (see :mod:`lagovad.recipe`).

    Args:
        model: the model (in train mode).
        batch: the collated batch.
        cfg: the run's config (recipe and our additions).
        categories: every anomaly class of the training split.
        rng: the step's generator (definition choice and exclusion).
        device: where the model lives.

    Returns:
        mil, frame_bce, pseudo_mil, mil_align, contrastive (each summed over the step's
        branches) and their sum, loss.
    """
    mask = batch.mask.to(device)
    video = batch.features.to(device)
    if cfg.recipe == "official":
        plan = plan_official(batch, names_vocabulary(categories), rng, cfg.exclude_prob)
        with _autocast(device):
            texts = [model.encode_text(plan.names, prompts=True)]
            if plan.descriptions:
                texts.append(model.encode_text(plan.descriptions, prompts=False))
            outputs = forward_branches(model, video, mask, texts)
        return OfficialLoss(detach_pool=cfg.detach_pool)(
            outputs[0],
            outputs[1] if len(outputs) > 1 else None,
            mask,
            plan.labels.to(device),
            plan.name_targets.to(device),
            plan.desc_targets.to(device),
            plan.frame_labels.to(device),
        )
    definition, labels, targets, frame_labels = batch_definition(
        batch, rng, categories, cfg.description_prob, cfg.exclude_prob
    )
    with _autocast(device):
        output = model(video, mask, definition)
    return LaGoVADLoss(detach_pool=cfg.detach_pool)(
        output, mask, labels.to(device), targets.to(device), frame_labels.to(device)
    )


def train_step(
    model: torch.nn.Module,
    batch: Batch,
    cfg: TrainConfig,
    categories: Sequence[str],
    rng: np.random.Generator,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
) -> dict[str, torch.Tensor]:
    """One optimisation step: the recipe's terms, backward, clipping, optimizer, schedule.

    Args:
        model, batch, cfg, categories, rng, device: as :func:`train_step_terms`.
        optimizer: the optimizer of the trainable parameters.
        scheduler: the learning-rate schedule (stepped after the optimizer), if any.

    Returns:
        The step's loss terms (graphs kept; ``float(term)`` to log them).
    """
    terms = train_step_terms(model, batch, cfg, categories, rng, device)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if cfg.grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return terms


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    order = torch.randperm(n, generator=generator).tolist()
    for lo in range(0, n, batch_size):
        yield order[lo : lo + batch_size]


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    data: SplitData,
    definition: AnomalyDefinition,
    max_len: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Frame AUC and AP of sigmoid(frame logits) over all frames of a split.

    Videos longer than ``max_len`` run as non-overlapping ``max_len`` chunks (the authors'
    full-length protocol); ground truth as :func:`lagovad.data.frame_ground_truth`.

    Returns:
        {"val_auc", "val_ap"} (NaN when the split has only one frame class).
    """
    was_training = model.training
    model.eval()
    lengths = [int(n) for n in data.lengths]
    chunks = [(vi, lo, min(lo + max_len, n)) for vi, n in enumerate(lengths)
              for lo in range(0, n, max_len)]
    scores = [np.zeros(n, dtype=np.float64) for n in lengths]
    for lo in range(0, len(chunks), batch_size):
        part = chunks[lo : lo + batch_size]
        samples = []
        for vi, a, b in part:  # features read per batch, never the whole split
            feats = data.read(vi, a, b)
            samples.append(SynthSample(feats, np.zeros(len(feats), np.float32), 0, "", ""))
        batch = collate(samples)
        with _autocast(device):
            out = model(batch.features.to(device), batch.mask.to(device), definition)
        probs = torch.sigmoid(out.frame_logits.float()).cpu().numpy()
        for row, (vi, a, b) in enumerate(part):
            scores[vi][a:b] = probs[row, : b - a]
    model.train(was_training)
    y_true = np.concatenate(
        [frame_ground_truth(spans, n) for spans, n in zip(data.row_spans, lengths, strict=True)]
    )
    y_score = np.concatenate(scores)
    if y_true.min() == y_true.max():
        return {"val_auc": float("nan"), "val_ap": float("nan")}
    return {
        "val_auc": float(roc_auc(y_true, y_score)),
        "val_ap": float(average_precision(y_true, y_score)),
    }


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


# ----------------------------------------------------------------------------- checkpoints
def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _restore(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and RNG states of a checkpoint; return its extra."""
    config = read_checkpoint_config(folder)
    load_weights(model, load_file(str(folder / WEIGHTS)), source=str(folder / WEIGHTS))
    state = lagovad.load_training_state(folder)
    if state is None:
        raise TrainError(f"checkpoint {folder} has no optimizer/scheduler state to resume from")
    optimizer.load_state_dict(state["optimizer"])
    # the schedule function itself is rebuilt from the config, only its counters are stored
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
    rng = load_file(str(folder / RNG_STATE))
    torch.set_rng_state(rng["rng.torch"])
    cuda_states = [rng[k] for k in sorted(rng) if k.startswith("rng.cuda.")]
    if device.type == "cuda" and cuda_states:
        torch.cuda.set_rng_state_all(cuda_states)
    return config.get("extra", {})


def _write_checkpoint(
    out: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    extra: dict[str, Any],
    manifest: Path | None = None,
) -> Path:
    """Write epoch ``epoch`` into a temp folder, then rename it into place (atomic); the run's
    dataset manifest goes into the folder too."""
    final = out / f"epoch-{epoch:03d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out))
    try:
        if manifest is not None:
            link_manifest(manifest, tmp)
        with atomic_write(tmp / RNG_STATE) as fh:
            fh.write(save(_rng_state(device)))
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        lagovad.save_checkpoint(
            tmp, model, extra, optimizer_state=optimizer.state_dict(), scheduler_state=sched
        )
        if final.exists():  # a rerun of the same epoch replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(out / LATEST, {"checkpoint": final.name, "epoch": epoch})
    return final


def _prune_checkpoints(out: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` epoch folders (after the newest is complete)."""
    if keep_last < 1:
        return
    for old in sorted(out.glob("epoch-[0-9][0-9][0-9]"))[:-keep_last]:
        shutil.rmtree(old)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (WEIGHTS, RNG_STATE, "config.json"))


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder, or an output folder whose ``latest.json`` names one.

    When ``latest.json`` is unreadable or names an epoch that is gone or incomplete (deleted by
    hand, or pruned), the newest complete ``epoch-NNN`` folder is used, with a warning.

    Raises:
        TrainError: nothing to resume from.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TrainError(f"cannot resume from {path}: no such folder")
    if _complete(folder):
        return folder
    latest = folder / LATEST
    named = None
    if latest.is_file():
        try:
            named = folder / json.loads(latest.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError):
            named = None
        if named is not None and _complete(named):
            return named
    epochs = [p for p in sorted(folder.glob("epoch-[0-9][0-9][0-9]")) if _complete(p)]
    if epochs:
        if latest.is_file():
            what = f"names {named.name}, which is missing or incomplete" if named else \
                "cannot be read"
            warnings.warn(f"{latest} {what}; resuming from the newest complete epoch, "
                          f"{epochs[-1]}", LagovadWarning, stacklevel=2)
        return epochs[-1]
    raise TrainError(
        f"cannot resume from {path}: need a trainer checkpoint folder (with {WEIGHTS} and "
        f"{RNG_STATE}) or an output folder with a complete epoch-NNN folder"
    )


# ----------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a LaGoVAD model on a prevad store; returns the last epoch's metrics.

    Raises:
        TrainError: bad configuration or resume folder.
        lagovad.data.DataError: the store cannot provide valid data (raised before training).
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    resume_from = resolve_resume(cfg.resume) if cfg.resume else None
    replaced = check_out_folder(cfg, resume_from)
    if resume_from is not None:
        warn_resume_changes(cfg, resume_from)

    # -- model first (its config fixes the feature dimension); a seeded init is reproducible
    torch.manual_seed(cfg.seed)
    model = lagovad.create_model(cfg.model, pretrained=cfg.pretrained)
    dim = int(model.config["video_dim"])
    max_len = int(cfg.max_len or model.config["max_len"])

    # -- data: every problem is raised here, before any step
    store = Store(cfg.store)
    data = load_training_data(cfg, store, dim)
    train_data, val_data = data.train, data.val
    if cfg.neighbour_cache:
        neighbours = Neighbours.from_mapping(
            load_retrieval_cache(store, cfg.neighbour_cache, train_data),
            train_data.video_ids, keep=~train_data.is_anomaly)
    else:
        neighbours = neighbour_rows(
            store.root / "indexes" / f"neighbours-{_safe_name(data.feature_model)}.parquet",
            train_data.video_ids, train_data.is_anomaly, lambda: data.train_index.means,
            cfg.neighbours_k,
        )
    synth = DynamicSynthesizer(
        train_data, neighbours, max_len=max_len, seed=cfg.seed, cut=cfg.cut_rule
    )
    categories = train_data.categories
    val_definition = AnomalyDefinition.from_strings(categories, kind="names")

    # -- optimizer and schedule
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(synth) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total_steps, cfg.warmup_steps, 1.0)
    )

    start_epoch, step, history = 0, 0, []
    if resume_from is not None:
        extra = _restore(resume_from, model, optimizer, scheduler, device)
        start_epoch, step = int(extra["epoch"]), int(extra["step"])
        history = list(extra.get("history", []))
    if resume_from is not None:
        warn_dataset_changed(read_checkpoint_config(resume_from), data.meta, out)
    clear_out_folder(replaced)  # every check passed: only now is the old run replaced
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = write_manifest(out, data.manifest, data.meta)

    metrics: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        shuffle = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sums: dict[str, float] = {}
        order = list(_batches(len(synth), cfg.batch_size, shuffle))
        bar = tqdm(
            epoch_batches(synth, epoch, order, cfg.workers),
            total=len(order),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
        )
        t0 = time.perf_counter()
        for n_batch, batch in enumerate(bar, start=1):
            rng = np.random.default_rng([cfg.seed, epoch, step])
            terms = train_step(model, batch, cfg, categories, rng, device, optimizer, scheduler)
            step += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix({k: f"{v / n_batch:.3f}" for k, v in sums.items()})
        bar.close()

        metrics = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0]}
        metrics.update({k: v / max(1, steps_per_epoch) for k, v in sums.items()})
        metrics["samples_per_s"] = len(synth) / max(time.perf_counter() - t0, 1e-9)
        if val_data is not None:
            metrics.update(
                evaluate_split(model, val_data, val_definition, max_len, cfg.batch_size, device)
            )
        history.append(metrics)
        if cfg.progress:
            tqdm.write(" ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        _write_checkpoint(
            out,
            epoch + 1,
            model,
            optimizer,
            scheduler,
            device,
            {
                "train_config": _public_config(cfg),
                "epoch": epoch + 1,
                "step": step,
                "metrics": metrics,
                "history": history,
                "feature_model": data.feature_model,
                "definition": val_definition.to_dict(),
                "dataset": {**data.meta, "manifest": MANIFEST},
            },
            manifest_path,
        )
        _prune_checkpoints(out, cfg.keep_last)
        plot_history(history, out / CURVES)
    return metrics


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot the loss terms and the validation AUC/AP per epoch into one PNG (atomic write).

    Args:
        history: per-epoch metrics as the trainer records them.
        path: the PNG to write.

    Returns:
        The written path.
    """
    from prevad.io import new_figure

    epochs = [m["epoch"] for m in history]
    terms = ["loss", "mil", "frame_bce", "pseudo_mil", "mil_align", "contrastive"]
    fig = new_figure(figsize=(10, 4))  # pyplot-free: the caller's backend is left alone
    ax1, ax2 = fig.subplots(1, 2)
    for name in terms:
        if all(name in m for m in history):
            ax1.plot(epochs, [m[name] for m in history], marker=".", label=name,
                     lw=2.0 if name == "loss" else 1.0)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("mean training loss")
    ax1.legend(fontsize="small")
    for name in ("val_auc", "val_ap"):
        values = [m.get(name, float("nan")) for m in history]
        if any(math.isfinite(v) for v in values):
            ax2.plot(epochs, values, marker=".", label=name)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation (frame level)")
    ax2.set_ylim(0, 1.02)
    if ax2.lines:
        ax2.legend(fontsize="small")
    else:
        ax2.text(0.5, 0.5, "no validation split", ha="center", va="center")
    return atomic_save_png(fig, path)


def _public_config(cfg: TrainConfig) -> dict[str, Any]:
    data = asdict(cfg)
    data.pop("resume")
    data.pop("overwrite")
    return data


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
