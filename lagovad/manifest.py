"""What a training run trained on: the dataset manifest.

A manifest is one Parquet file, ``dataset.parquet``, written into the run folder and linked into
every epoch folder (next to ``model.safetensors``). One row per training (and validation) clip:

    role ("train"/"val"), split, annotation_id, video_id, location, checksum

``checksum`` is the blake2b-128 of the clip's feature ``.npy`` file. The file's key-value
metadata (``lagovad.dataset``) holds a JSON summary: the store, the feature model, the label rule
(``--labels``), the dataset filter, the splits, counts per role, the annotations' sources
(``annotator_kind:annotator`` counts; a model annotation names its stage and version there, e.g.
``model:judge@3f2a``), the stage versions read from those names, and ``digest``, a SHA-256 over
the rows (sorted), which names the dataset in short. The same summary is stored in the
checkpoint's ``config.json`` (``extra["dataset"]``), where ``lagovad eval`` and ``lagovad
detect`` read it (:func:`describe_checkpoint`).

``lagovad train --manifest FILE`` trains on exactly the listed annotations (the label rule is not
applied again) and refuses, with one error line, when a listed annotation or feature row is gone
or a listed feature file's checksum differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lagovad.errors import LagovadError
from prevad.io import atomic_write

__all__ = [
    "MANIFEST",
    "Manifest",
    "ManifestError",
    "build_manifest",
    "describe_checkpoint",
    "link_manifest",
    "read_manifest",
    "write_manifest",
]

MANIFEST = "dataset.parquet"
FORMAT = "lagovad-train-manifest"
VERSION = 1
_META_KEY = b"lagovad.dataset"
_COLUMNS = ("role", "split", "annotation_id", "video_id", "location", "checksum")
_SHOW = 10


class ManifestError(LagovadError, ValueError):
    """A manifest cannot be read, or the store no longer holds what it lists."""


@dataclass
class Manifest:
    """A read manifest.

    Attributes:
        path: the file.
        table: the rows (columns as in the module doc).
        meta: the JSON summary.
    """

    path: Path
    table: pa.Table
    meta: dict[str, Any]

    def rows(self, role: str) -> pa.Table:
        """The rows of one role ("train" or "val")."""
        return self.table.filter(pc.equal(self.table.column("role"), role))

    @property
    def digest(self) -> str:
        """The dataset's digest."""
        return str(self.meta["digest"])


def _digest(table: pa.Table) -> str:
    ordered = table.sort_by([(c, "ascending") for c in ("role", "annotation_id")])
    h = hashlib.sha256()
    for name in _COLUMNS:
        h.update(name.encode())
        for value in ordered.column(name).to_pylist():
            h.update(value.encode() + b"\0")
    return h.hexdigest()


def _stage_versions(sources: Counter) -> dict[str, list[str]]:
    """stage -> versions, from model annotators named ``stage@version``."""
    found: dict[str, set[str]] = {}
    for source in sources:
        kind, _, annotator = source.partition(":")
        if kind == "model" and "@" in annotator:
            stage, _, version = annotator.rpartition("@")
            found.setdefault(stage, set()).add(version)
    return {stage: sorted(v) for stage, v in sorted(found.items())}


def build_manifest(
    parts: dict[str, tuple[Any, list[str]]], summary: dict[str, Any]
) -> tuple[pa.Table, dict[str, Any]]:
    """The manifest of a run.

    Args:
        parts: role -> (:class:`lagovad.data.SplitData`, checksum per row).
        summary: store, feature_model, labels, dataset, train_split, val_split.

    Returns:
        (rows, metadata with counts, sources, stage versions and digest).
    """
    columns: dict[str, list[str]] = {c: [] for c in _COLUMNS}
    counts, sources = {}, Counter()
    for role, (data, checksums) in parts.items():
        n = len(data.video_ids)
        columns["role"] += [role] * n
        columns["split"] += [data.split] * n
        columns["annotation_id"] += list(data.annotation_ids)
        columns["video_id"] += list(data.video_ids)
        columns["location"] += list(data.locations)
        columns["checksum"] += list(checksums)
        counts[role] = {"videos": n, "abnormal": int(data.is_anomaly.sum())}
        sources.update(a if a.startswith("model:") else "human" for a in data.annotators)
    table = pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()})
    meta = {
        "format": FORMAT, "version": VERSION, **summary, "counts": counts,
        "sources": dict(sorted(sources.items())), "stage_versions": _stage_versions(sources),
        "digest": _digest(table),
    }
    return table, meta


def write_manifest(folder: Path, table: pa.Table, meta: dict[str, Any]) -> Path:
    """Write ``folder/dataset.parquet`` atomically."""
    path = Path(folder) / MANIFEST
    schema = table.schema.with_metadata({_META_KEY: json.dumps(meta).encode()})
    with atomic_write(path) as fh:
        pq.write_table(table.cast(schema), fh)
    return path


def link_manifest(source: Path, folder: Path) -> None:
    """Put the run's manifest into a checkpoint folder (a hard link; a copy across devices)."""
    target = Path(folder) / MANIFEST
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest file (or the one in a checkpoint or run folder).

    Raises:
        ManifestError: missing, unreadable, or not a lagovad training manifest.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found (expected a {MANIFEST} written by "
                            "lagovad train, or the checkpoint folder holding one)")
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"null"))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ManifestError(f"manifest {path} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a lagovad training manifest (no {FORMAT} metadata)")
    if meta.get("version") != VERSION:
        raise ManifestError(f"manifest {path} has version {meta.get('version')!r}; this lagovad "
                            f"reads version {VERSION}")
    missing = [c for c in _COLUMNS if c not in table.column_names]
    if missing or table.num_rows == 0:
        raise ManifestError(f"manifest {path} lacks columns {missing}" if missing
                            else f"manifest {path} lists no annotations")
    table = table.select(list(_COLUMNS))
    if any(table.column(c).null_count for c in _COLUMNS):
        raise ManifestError(f"manifest {path} has empty values")
    if _digest(table) != meta.get("digest"):
        raise ManifestError(f"manifest {path} does not match its digest (edited or damaged)")
    return Manifest(path, table, meta)


def verify(manifest: Manifest, role: str, data: Any, checksums: list[str] | None) -> None:
    """Refuse when the store's rows for ``role`` are not exactly the listed ones.

    Args:
        manifest: the manifest.
        role: "train" or "val".
        data: the :class:`lagovad.data.SplitData` resolved from the listed annotation ids.
        checksums: the current checksum per row of ``data`` (None: only ids are compared).

    Raises:
        ManifestError: listed annotations or features gone, or feature files changed.
    """
    rows = manifest.rows(role)
    listed = dict(zip(rows.column("annotation_id").to_pylist(),
                      zip(rows.column("video_id").to_pylist(),
                          rows.column("checksum").to_pylist(), strict=True), strict=True))
    now = dict(zip(data.annotation_ids, range(len(data.annotation_ids)), strict=True))
    gone = [listed[a][0] for a in listed if a not in now]
    changed = []
    if checksums is not None:
        changed = [vid for a, (vid, c) in listed.items() if a in now and checksums[now[a]] != c]
    if gone or changed:
        parts = []
        if gone:
            parts.append(f"{len(gone)} listed annotations are gone ({_ids(gone)})")
        if changed:
            parts.append(f"{len(changed)} listed feature files changed ({_ids(changed)})")
        raise ManifestError(
            f"manifest {manifest.path} ({role}): " + "; ".join(parts)
            + ": the store no longer holds the dataset it lists"
        )


def _ids(ids: list[str]) -> str:
    shown = ", ".join(sorted(ids)[:_SHOW])
    return shown + (f", +{len(ids) - _SHOW} more" if len(ids) > _SHOW else "")


def describe(meta: dict[str, Any] | None) -> str:
    """One line naming a run's dataset (from a manifest's or a checkpoint's summary)."""
    if not meta:
        return "trained on: unknown (the checkpoint records no dataset; written before lagovad " \
               "recorded one, or not by lagovad train)"
    counts = ", ".join(f"{role} {c['videos']} videos ({c['abnormal']} abnormal)"
                       for role, c in meta.get("counts", {}).items())
    versions = "; ".join(f"{s}@{','.join(v)}" for s, v in meta.get("stage_versions", {}).items())
    where = f", dataset {meta['dataset']!r}" if meta.get("dataset") else ""
    return (f"trained on: dataset {str(meta.get('digest', '?'))[:12]} from store "
            f"{meta.get('store')}{where}, features {meta.get('feature_model')}, labels "
            f"{meta.get('labels')}: {counts}"
            + (f"; annotation stages {versions}" if versions else "")
            + (f"; manifest {meta['manifest']}" if meta.get("manifest") else ""))


def describe_checkpoint(path: str | os.PathLike[str]) -> str:
    """The ``trained on: ...`` line of a checkpoint folder (see :func:`describe`)."""
    from lagovad.checkpoint import read_checkpoint_config

    extra = read_checkpoint_config(path).get("extra") or {}
    return describe(extra.get("dataset") if isinstance(extra, dict) else None)
