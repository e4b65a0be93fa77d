"""Frame-feature extraction: videos -> CLIP image features [T, D], the authors' protocol by default.

Pipeline: decode threads (PyAV, FFmpeg's own frame threads inside) turn each video into chunks of
sampled, resized RGB frames and put them on a bounded queue; the main thread packs frames from
consecutive videos into full batches and runs the image encoder, so decoding overlaps encoding and
the model always sees full batches. A video's features are written (atomically) as soon as all its
frames are encoded.

Outputs:
- a prevad store: finished clips are committed together, up to `commit_every` clips (default
  32, or every 5 s) in one atomic commit (`Store.feature_commit` + `Store.append_many`): each
  clip's .npy, its Feature row and its "ok" StageResult row land together or not at all, and a
  crash loses at most the clips awaiting their commit (extracted again by the next run).
  Failures are StageResult rows (stage "extract_features", status "failed", reason). Only the
  rows it needs are read (named queries in `prevad.queries`), never whole tables.
- a plain folder: `<out>/<video stem>.npy` (the authors' layout), `<out>/failures.jsonl` (this
  run's failures) and `<out>/extract_protocol.json` (model and sampling, checked on rerun).
`export_dir` additionally writes, in store mode, `<export_dir>/<source name>.npy` for every
requested clip: extracted in this run or before (read back from the store). Names are the
video's `source_video_id` (made file-system safe), plus `__clip<index>_<start>-<end>` for a clip
of a split video; colliding names get `__<source>`, then the clip id.

Store mode without inputs works per clip (D1 in `docs/DECISIONS.md`): one feature array per clip
that `clean` cut (`features.video_id` = the clip's segment id), decoded from the parent file over
the clip's span; a video that was never split is a clip of itself (its video id, the whole file).

Resume: a clip whose features exist for this model is skipped before any decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lagovad.extraction.jobs import (  # noqa: F401 - re-exported: the public front door
    FAILURES_FILE,
    LOCAL_SOURCE,
    PROTOCOL_FILE,
    STAGE,
    VIDEO_EXTENSIONS,
    ExtractError,
    ExtractSummary,
    Protocol,
    VideoJob,
    make_protocol,
    unique_stems,
)
from lagovad.extraction.pipeline import run_extraction  # noqa: F401
from lagovad.extraction.sinks import (  # noqa: F401
    COMMIT_ITEMS,
    FolderSink,
    StoreSink,
    save_npy,
)
from lagovad.image_encoder import ImageEncoder

# -- inputs ------------------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension) and video files under folders (recursive, sorted).

    Raises:
        ExtractError: If an input does not exist or nothing is found.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            )
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise ExtractError(f"input does not exist: {p}")
    if not paths:
        raise ExtractError(f"no video files found in {[str(i) for i in inputs]} "
                           f"(extensions {VIDEO_EXTENSIONS})")
    return paths


# -- entry point -------------------------------------------------------------------------------


def extract(
    inputs: Sequence[str | Path] | None,
    encoder: ImageEncoder,
    *,
    out_dir: str | Path | None = None,
    store: Any = None,
    export_dir: str | Path | None = None,
    stride: int = 8,
    offset: int | None = None,
    size: int | None = None,
    batch_size: int = 64,
    decode_workers: int = 2,
    model_id: str | None = None,
    progress: bool = True,
    commit_every: int = COMMIT_ITEMS,
) -> ExtractSummary:
    """Extract CLIP frame features for files/folders, or for every video of a store.

    Args:
        inputs: Video files and/or folders; None means the store's videos (needs `store`).
        encoder: Image encoder (see `lagovad.image_encoder.load_image_encoder`).
        out_dir: Plain-folder output (`<out>/<stem>.npy`); exclusive with `store`.
        store: A `prevad.Store` to write features into.
        export_dir: In store mode, also write `<export_dir>/<stem>.npy`.
        stride: Sample one frame every `stride` frames.
        offset: First sampled index (`stride // 2` when None).
        size: Frame side (no crop); defaults to the encoder's input size.
        batch_size: Frames per encoder forward.
        decode_workers: Videos decoded concurrently.
        model_id: Name stored with the features (default `encoder.model_id`).
        progress: Show a progress bar.
        commit_every: In store mode, clips per store commit (1: one commit per clip).

    Returns:
        The run summary; failures are in `summary.failures` and in the outputs.

    Raises:
        ExtractError: On invalid inputs or an output that holds another protocol.
    """
    if (out_dir is None) == (store is None):
        raise ExtractError("give exactly one output: out_dir (a folder) or store (a prevad store)")
    if export_dir is not None and store is None:
        raise ExtractError("export_dir (--export) needs a store (--store); with a folder "
                           "output the .npy files are already in the authors' layout")
    protocol = make_protocol(encoder, stride, offset, size)
    model_id = model_id or encoder.model_id
    if store is not None:
        sink: FolderSink | StoreSink = StoreSink(store, model_id, protocol, export_dir,
                                                 commit_items=commit_every)
        paths = None if inputs is None else expand_inputs(inputs)
    else:
        if inputs is None:
            raise ExtractError("inputs are required when writing to a folder (out_dir)")
        sink = FolderSink(Path(out_dir), model_id, protocol)
        paths = expand_inputs(inputs)
    jobs = sink.jobs(paths)
    return run_extraction(jobs, sink, encoder, protocol, batch_size=batch_size,
                          decode_workers=decode_workers, progress=progress)
