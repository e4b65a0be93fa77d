"""Import/export of the official annotation formats, and trainer-ready manifests.

Benchmark format (the authors' ``data/other_datasets/*.json``, as in
``shared/benchmarks/<name>/test_annotations.json``): a JSON list of entries
``{"path": feature .npy, "video_path": video, "class_name": str, "descriptions": list|null,
"anomaly_span": [[start, end], ...] relative in [0, 1]}``.

PreVAD training format: the authors' ``src/datasets/PreVAD.py`` is not in the reference index
this was written from, so the layout is the same entry layout as the benchmark files (one file per
split), with ``class_name`` a PreVAD taxonomy name (a sub-category, a top-level class when only
that is known, or "Normal") and ``descriptions`` the list of anomaly descriptions (null for
normal videos). The class hierarchy is not repeated in the file: it comes from
:mod:`prevad.taxonomy`. Import accepts taxonomy aliases and stores canonical names.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prevad import queries, taxonomy
from prevad.errors import MalformedFileError, UnknownCategoryError, ValidationError
from prevad.io import atomic_write, atomic_write_text
from prevad.records import Annotation, Video, make_id, to_table, video_id_for
from prevad.store import TABLES, AppendResult, Store, key_hashes

ENTRY_KEYS = ("path", "video_path", "class_name", "descriptions", "anomaly_span")
OFFICIAL_ANNOTATOR = "official"


def load_json(path: str | Path) -> Any:
    """Parse a JSON file (UTF-8, as JSON requires).

    Raises:
        MalformedFileError: naming the file, line and column of the first error, or the
            offset of the first byte that is not UTF-8 (a Latin-1 file, say).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MalformedFileError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise MalformedFileError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "JSON files must be UTF-8 — re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedFileError(
            f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}, char {exc.pos})"
        ) from None


def read_entries(path: str | Path) -> list[dict[str, Any]]:
    """Read and check an official annotation file (benchmark or PreVAD training layout).

    Raises:
        MalformedFileError: bad JSON, not a list, or an entry with missing/mistyped keys
            (the message names the file and the entry index).
    """
    data = load_json(path)
    if not isinstance(data, list):
        raise MalformedFileError(
            f"{path}: top level must be a JSON list of entries, got {type(data).__name__}"
        )
    for i, e in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise MalformedFileError(f"{where} must be an object, got {type(e).__name__}")
        missing = [k for k in ENTRY_KEYS if k not in e]
        if missing:
            raise MalformedFileError(f"{where} lacks key {missing[0]!r}; needs {ENTRY_KEYS}")
        for k in ("path", "video_path", "class_name"):
            if not isinstance(e[k], str) or not e[k]:
                raise MalformedFileError(f"{where}: {k!r} must be a non-empty string, got {e[k]!r}")
        d = e["descriptions"]
        if not (d is None or isinstance(d, str) or
                (isinstance(d, list) and all(isinstance(x, str) for x in d))):
            raise MalformedFileError(
                f"{where}: 'descriptions' must be null, a string or a list of strings, got {d!r}"
            )
        if not isinstance(e["anomaly_span"], list):
            raise MalformedFileError(
                f"{where}: 'anomaly_span' must be a list of [start, end], "
                f"got {e['anomaly_span']!r}"
            )
    return data


def _descriptions(d: Any) -> tuple[str | None, list[str] | None]:
    if d is None:
        return None, None
    lst = [d] if isinstance(d, str) else list(d)
    return (lst[0] if lst else None), lst


def _records(
    entries: list[dict[str, Any]], path: str | Path, dataset: str, source: str, split: str,
    category_of: Any, require_spans: bool = False,
) -> tuple[list[Video], list[Annotation], int]:
    """Records of the entries; byte-identical repeats of an entry are dropped and counted.

    Returns:
        (videos, annotations, number of identical repeats skipped).
    """
    videos, anns = [], []
    seen: dict[str, int] = {}
    repeats = 0
    for i, e in enumerate(entries):
        key = json.dumps(e, sort_keys=True)
        if key in seen:  # the same entry twice: one video, not a conflict with itself
            repeats += 1
            continue
        seen[key] = i
        try:
            category = category_of(e["class_name"])
            _check_spans(category, e["anomaly_span"], require_spans)
            vid = video_id_for(source, e["video_path"])
            desc, descs = _descriptions(e["descriptions"])
            videos.append(Video(vid, source, e["video_path"], uri=e["video_path"],
                                feature_uri=e["path"]))
            anns.append(Annotation(
                annotation_id=make_id(dataset, vid, OFFICIAL_ANNOTATOR, split),
                video_id=vid, dataset=dataset, annotator_kind="human",
                annotator=OFFICIAL_ANNOTATOR, category=category,
                is_anomaly=category != taxonomy.NORMAL, description=desc,
                spans=e["anomaly_span"], split=split, descriptions=descs, source_index=i,
            ))
        except ValidationError as exc:
            raise type(exc)(f"{path}: entry {i} ({e['video_path']}): {exc}") from None
    return videos, anns, repeats


def _check_spans(category: str, spans: list, require_spans: bool) -> None:
    """Normal videos have no anomaly span; test-set anomalies must say where they are."""
    if category == taxonomy.NORMAL and spans:
        raise ValidationError(f"class 'Normal' with anomaly_span {spans}: a normal video has "
                              "no anomalous span")
    if require_spans and category != taxonomy.NORMAL and not spans:
        raise ValidationError(f"class {category!r} with an empty anomaly_span: a test-set "
                              "anomaly needs at least one [start, end] span")


def _append_pair(store: Store, videos: list[Video], anns: list[Annotation]) -> AppendResult:
    """Append videos and annotations in one atomic commit (both tables or neither)."""
    res = store.append_many({"videos": videos, "annotations": anns})
    rv, ra = res["videos"], res["annotations"]
    return AppendResult(rv.written + ra.written, rv.skipped + ra.skipped)


def benchmark_classes(name: str) -> tuple[str, ...]:
    """The class list of a known benchmark (:data:`prevad.taxonomy.BENCHMARK_CLASSES`).

    Raises:
        ValidationError: ``name`` is not one of the seven benchmarks.
    """
    try:
        return taxonomy.BENCHMARK_CLASSES[name]
    except KeyError:
        raise ValidationError(
            f"no class list known for benchmark {name!r} (known: "
            f"{', '.join(taxonomy.BENCHMARK_CLASSES)}); pass its class list (classes=[...], "
            "CLI --classes)"
        ) from None


#: Bump when import code changes the records an unchanged file gives.
IMPORT_CODE_VERSION = 2


def _fingerprint(path: str | Path, *params: Any) -> str:
    """sha256 of the file's bytes and the import parameters."""
    h = hashlib.sha256(json.dumps([IMPORT_CODE_VERSION, *params], default=str).encode())
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise MalformedFileError(f"{path}: file not found") from None
    return h.hexdigest()


def _already_imported(store: Store, digest: str) -> AppendResult | None:
    """The result of re-importing a file imported before, when all its rows are still stored.

    A successful import leaves ``imports/<sha256>.npz`` with the key hashes of its rows; the
    same bytes with the same parameters give the same records (timestamps aside), so when every
    key is still in the store's key indexes the import would write nothing: it is answered
    without parsing the file or building records.
    """
    fp = store.root / "imports" / f"{digest}.npz"
    if fp.is_symlink() or not fp.is_file():  # a link could lead out of the store: ignored
        return None
    try:
        with np.load(fp, allow_pickle=False) as z:
            v, a, rows = z["videos"], z["annotations"], int(z["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if v.dtype != np.uint64 or a.dtype != np.uint64 or v.ndim != 1 or a.ndim != 1:
        return None  # not a fingerprint this code wrote: import normally
    if store.has_keys("videos", v) and store.has_keys("annotations", a):
        return AppendResult(0, rows)
    return None


def _remember_import(store: Store, digest: str, videos: list[Video], anns: list[Annotation],
                     rows: int) -> None:
    if store.read_only:
        return
    buf = io.BytesIO()
    np.savez(buf, videos=key_hashes(TABLES["videos"], to_table(videos, Video)),
             annotations=key_hashes(TABLES["annotations"], to_table(anns, Annotation)),
             rows=np.int64(rows))
    store.write_file(f"imports/{digest}.npz", buf.getvalue())


def _import_file(store: Store, path: str | Path, dataset: str, source: str, split: str,
                 category_of: Any, params: Any, require_spans: bool = False) -> AppendResult:
    """Import one annotation file in one atomic commit; an unchanged re-import reads nothing."""
    digest = _fingerprint(path, dataset, source, split, params, require_spans)
    done = _already_imported(store, digest)
    if done is not None:
        return done
    entries = read_entries(path)
    videos, anns, repeats = _records(entries, path, dataset, source, split, category_of,
                                     require_spans=require_spans)
    res = _append_pair(store, videos, anns)
    total = res.written + res.skipped + 2 * repeats
    _remember_import(store, digest, videos, anns, total)
    return AppendResult(res.written, res.skipped + 2 * repeats)


def import_benchmark(
    store: Store, name: str, path: str | Path, classes: list[str] | None = None
) -> AppendResult:
    """Import an official benchmark test file as Video + Annotation rows (split "test").

    Every entry is checked against the benchmark's own class list (never one computed from the
    file itself), a Normal entry must have no span and an anomaly at least one. An entry
    repeated byte for byte is imported once (and counted as skipped).

    Args:
        store: target store.
        name: benchmark name, used as video source and annotation dataset (e.g. "ucf").
        path: the ``test_annotations.json`` file.
        classes: the benchmark's class list; default: the known list of ``name``
            (:func:`benchmark_classes`), required for any other benchmark.

    Raises:
        MalformedFileError, UnknownCategoryError, ValidationError, DuplicateIdError.
    """
    if name == "prevad":
        raise ValidationError("benchmark name 'prevad' is reserved for the PreVAD training set")
    allowed = list(classes) if classes is not None else list(benchmark_classes(name))

    def check(c: str) -> str:
        if c not in allowed:
            hint = taxonomy.close_matches(c, list(allowed))
            raise UnknownCategoryError(
                f"class {c!r} is not in the {name} class list {allowed}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        return c

    return _import_file(store, path, name, name, "test", check, allowed, require_spans=True)


def import_prevad(store: Store, path: str | Path, split: str = "train") -> AppendResult:
    """Import a PreVAD training/validation annotation file (dataset "prevad").

    Raises:
        MalformedFileError, UnknownCategoryError (with close matches), ValidationError,
        DuplicateIdError.
    """
    return _import_file(store, path, "prevad", "prevad", split, taxonomy.canonical, None)


def export_entries(store: Store, dataset: str, split: str | None = None) -> list[dict[str, Any]]:
    """The official entries of a stored dataset, in the imported order."""
    rows = store.query(
        queries.ANNOTATIONS_OF_DATASET, {"dataset": dataset, "split": split}
    ).to_pylist()
    if not rows:
        raise ValidationError(
            f"no annotations of dataset {dataset!r}"
            + (f" split {split!r}" if split else "") + " in the store"
        )
    return [
        {
            "path": r["feature_uri"],
            "video_path": r["uri"] if r["uri"] is not None else r["source_video_id"],
            "class_name": r["category"],
            "descriptions": r["descriptions"],
            "anomaly_span": r["spans"],
        }
        for r in rows
    ]


def export_benchmark(store: Store, name: str, out: str | Path) -> Path:
    """Write a stored benchmark back in the official format (4-space indented JSON, atomic)."""
    out = Path(out)
    atomic_write_text(out, json.dumps(export_entries(store, name), indent=4) + "\n")
    return out


def export_prevad(store: Store, out: str | Path, split: str = "train") -> Path:
    """Write the stored PreVAD annotations of one split in the training format."""
    out = Path(out)
    atomic_write_text(out, json.dumps(export_entries(store, "prevad", split), indent=4) + "\n")
    return out


#: Kept for importers of the old name; the SQL lives in :mod:`prevad.queries`.
MANIFEST_SQL = queries.MANIFEST


def manifest(
    store: Store, dataset: str | None = None, split: str | None = None,
    model_id: str | None = None, require_features: bool = False,
) -> pa.Table:
    """Trainer-ready rows: video id, feature location, label, category, parent, text, spans.

    ``parent_category`` is the PreVAD top-level class (the class itself for top-level labels,
    "Normal" for normal videos); null for benchmark datasets.

    Raises:
        ValidationError: ``require_features`` and some video has no feature of ``model_id``.
    """
    tbl = store.query(MANIFEST_SQL, {"dataset": dataset, "split": split, "model_id": model_id})
    parents = [
        taxonomy.top_level(c) if d == "prevad" else None
        for c, d in zip(tbl.column("category").to_pylist(), tbl.column("dataset").to_pylist(),
                        strict=True)
    ]
    tbl = tbl.append_column("parent_category", pa.array(parents, pa.string()))
    if require_features:
        missing = tbl.column("feature_location").null_count
        if missing:
            raise ValidationError(
                f"{missing} of {tbl.num_rows} manifest rows have no feature"
                + (f" of model {model_id!r}" if model_id else "")
            )
    return tbl


def write_manifest(tbl: pa.Table, out: str | Path) -> Path:
    """Write a manifest atomically as Parquet (``.parquet``) or JSON lines (``.jsonl``)."""
    out = Path(out)
    if out.suffix == ".parquet":
        with atomic_write(out) as fh:
            pq.write_table(tbl, fh)
    elif out.suffix == ".jsonl":
        lines = [json.dumps(r, default=str) for r in tbl.to_pylist()]
        atomic_write_text(out, "".join(line + "\n" for line in lines))
    else:
        raise ValidationError(f"manifest file must end in .parquet or .jsonl, got {out.name!r}")
    return out
